//! Our TCP against Linux's over AF_XDP on a veth, through an impairing
//! forwarder: the kernel in namespace A and the stack (in-process, over
//! `XdpNic` on `if_b`, native XDP) in namespace B share one /24, bridged by a
//! middle namespace M whose forwarder (tests/support/impair.rs) drops,
//! duplicates, reorders and corrupts frames both ways. On one connection the
//! kernel sends the stack a deterministic stream and the stack sends the
//! kernel another, at the same time; each receiver checks every byte as it
//! arrives. The test also checks that every impairment happened (so it cannot
//! pass vacuously) and that both ends saw and recovered from them: the
//! stack retransmitted, reassembled out-of-order data and rejected corrupted
//! segments by their checksums, and so did the kernel.
//!
//! The forwarder writes the full TCP checksum before it corrupts a byte, so
//! a corrupted frame is detectably wrong on arrival.
//!
//! Needs root; skipped without. `RBYPASS_TEST_BULK_MIB` sets the size of
//! each direction (256 MiB by default). Everything is bounded: the test fails
//! with the progress of both directions if it is not done within
//! `DEADLINE` or makes no progress for `STALL`.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::xdp::{XdpMode, XdpNic};
use rbypass_nic::Nic;
use rbypass_stack::tcp::conn::{Shutdown as StackShutdown, TcpInfo};
use rbypass_stack::{clock, SockError, SocketId, Stack, StackConfig};
use support::impair::{Forwarder, ImpairStats, Impairment};
use support::netns::{have_root_and_netns, NetNs};
use support::veth::{in_netns, ThreeHosts};

const TAG: &str = "xia";
const SUBNET: u8 = 90;
const PORT: u16 = 7500;
/// The whole transfer (both directions) must be done by then.
const DEADLINE: Duration = Duration::from_secs(240);
/// Longest time without a single byte of progress in either direction.
const STALL: Duration = Duration::from_secs(45);
/// A gap between two reads of the kernel's receiver longer than this is
/// counted as a pause (for the report only).
const PAUSE: Duration = Duration::from_millis(100);
/// Below this size the impairment counts are too small to insist on.
const MIN_BYTES_FOR_COUNTS: u64 = 16 << 20;

/// Kernel to stack.
const UP: u8 = 0;
/// Stack to kernel.
const DOWN: u8 = 1;

fn bulk_bytes() -> u64 {
    let mib = match std::env::var("RBYPASS_TEST_BULK_MIB") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("RBYPASS_TEST_BULK_MIB={v:?} is not a number")),
        Err(_) => 256,
    };
    assert!(mib > 0, "RBYPASS_TEST_BULK_MIB must be at least 1");
    mib << 20
}

/// Word `w` of stream `dir` (splitmix64 of the word index).
fn word(dir: u8, w: u64) -> [u8; 8] {
    let mut z = w
        .wrapping_add(u64::from(dir) << 56)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Bytes `offset..offset + out.len()` of stream `dir`.
fn fill(dir: u8, offset: u64, out: &mut [u8]) {
    let mut i = offset;
    let mut k = 0;
    while k < out.len() {
        let w = word(dir, i / 8);
        let at = (i % 8) as usize;
        let take = (8 - at).min(out.len() - k);
        out[k..k + take].copy_from_slice(&w[at..at + take]);
        k += take;
        i += take as u64;
    }
}

/// Checks a received stream piece by piece as it arrives.
struct Checker {
    dir: u8,
    offset: u64,
    want: Vec<u8>,
}

impl Checker {
    fn new(dir: u8) -> Checker {
        Checker {
            dir,
            offset: 0,
            want: Vec::new(),
        }
    }

    /// Checks the next `got` bytes of the stream, naming the first bad one.
    fn check(&mut self, got: &[u8]) -> Result<(), String> {
        self.want.resize(got.len(), 0);
        fill(self.dir, self.offset, &mut self.want);
        if let Some(k) = got.iter().zip(&self.want).position(|(g, w)| g != w) {
            return Err(format!(
                "stream {}: byte {} is {:#04x}, expected {:#04x}",
                self.dir,
                self.offset + k as u64,
                got[k],
                self.want[k]
            ));
        }
        self.offset += got.len() as u64;
        Ok(())
    }
}

/// Bytes moved so far, shared with the main thread for the progress report.
#[derive(Default)]
struct Progress {
    kernel_sent: AtomicU64,
    kernel_got: AtomicU64,
    stack_sent: AtomicU64,
    stack_got: AtomicU64,
    /// Pauses of over `PAUSE` in the stream the kernel receives (the
    /// stack's retransmission timeouts show up here), and their total.
    kernel_rx_pauses: AtomicU64,
    kernel_rx_pause_ns: AtomicU64,
}

impl Progress {
    fn total(&self) -> u64 {
        [
            &self.kernel_sent,
            &self.kernel_got,
            &self.stack_sent,
            &self.stack_got,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn describe(&self, n: u64) -> String {
        let mib = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
        format!(
            "kernel sent {:.1} / received {:.1} MiB, stack sent {:.1} / received {:.1} MiB (of {} MiB each way)",
            mib(&self.kernel_sent),
            mib(&self.kernel_got),
            mib(&self.stack_sent),
            mib(&self.stack_got),
            n >> 20
        )
    }
}

/// The stack's side, as its thread reports it when it stops.
#[derive(Debug, Default)]
struct StackReport {
    describe: String,
    mode: Option<XdpMode>,
    sent: u64,
    got: u64,
    peer_eof: bool,
    closed: bool,
    /// Why it stopped early, if it did.
    failure: Option<String>,
    last_info: Option<TcpInfo>,
    retransmits: u64,
    fast_retransmits: u64,
    ooo_segments: u64,
    rx_drop_tcp: u64,
    rx_drop_ip_csum: u64,
    drop_no_buffers: u64,
    rx_frames: u64,
    tx_frames: u64,
    /// Every stack counter that is not zero.
    nonzero: Vec<(&'static str, u64)>,
}

/// Opens `XdpNic` on `ifname` (native XDP unless the driver lacks it) in the
/// calling thread's namespace and serves one connection on `PORT`: sends
/// `n` bytes of stream `DOWN` and checks `n` bytes of stream `UP`.
fn serve(
    ifname: &str,
    n: u64,
    progress: &Progress,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<String, String>>,
) -> StackReport {
    let mut r = StackReport::default();
    let mut nic = match XdpNic::open_mode(ifname, None) {
        Ok(nic) => nic,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            r.failure = Some(e.to_string());
            return r;
        }
    };
    let Some(iface) = nic.iface() else {
        let _ = ready.send(Err(format!("{ifname} has no IPv4 address")));
        r.failure = Some("no address".into());
        return r;
    };
    let cfg = StackConfig {
        max_bufs: 16384,
        ..StackConfig::default()
    };
    let stack = Arc::new(Stack::create_private(&cfg, iface).expect("create the stack"));
    let listener = {
        let mut c = stack.lock();
        if let Err(e) = nic.attach(&mut c) {
            let _ = ready.send(Err(format!("attach: {e}")));
            r.failure = Some(format!("attach: {e}"));
            return r;
        }
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        c.tcp_listen(l, 4).unwrap();
        l
    };
    r.describe = nic.describe();
    r.mode = Some(nic.mode());
    let mut driver = Driver::new(stack.clone(), nic);
    driver.poll(clock::now_ns()).unwrap();
    let _ = ready.send(Ok(r.describe.clone()));

    let mut conn: Option<SocketId> = None;
    let mut checker = Checker::new(UP);
    // What is being sent: bytes out_off..out_off + out_len of stream DOWN.
    let mut out = vec![0u8; 256 << 10];
    let (mut out_off, mut out_len) = (0u64, 0usize);
    let mut inb = vec![0u8; 64 << 10];
    let mut shut = false;
    let mut last_info = Instant::now();
    let result: Result<(), String> = loop {
        if stop.load(Ordering::Relaxed) {
            break Err("stopped by the test (deadline, stall or a failure elsewhere)".into());
        }
        let now = clock::now_ns();
        if let Err(e) = driver.poll(now) {
            break Err(format!("driver poll: {e}"));
        }
        let step: Result<bool, String> = {
            let mut c = driver.stack().lock();
            (|| {
                if conn.is_none() {
                    conn = c.tcp_accept(listener).ok().map(|x| x.0);
                }
                let Some(s) = conn else { return Ok(false) };
                while r.sent < n {
                    if r.sent >= out_off + out_len as u64 {
                        out_off = r.sent;
                        out_len = out.len().min((n - r.sent) as usize);
                        fill(DOWN, out_off, &mut out[..out_len]);
                    }
                    let from = (r.sent - out_off) as usize;
                    match c.tcp_send(s, &out[from..out_len], now) {
                        Ok(k) => r.sent += k as u64,
                        Err(SockError::WouldBlock) | Err(SockError::NoBuffers) => break,
                        Err(e) => return Err(format!("tcp_send after {} bytes: {e}", r.sent)),
                    }
                }
                if r.sent == n && !shut {
                    c.tcp_shutdown(s, StackShutdown::Write, now)
                        .map_err(|e| format!("tcp_shutdown: {e}"))?;
                    shut = true;
                }
                while !r.peer_eof {
                    match c.tcp_recv(s, &mut inb, false, now) {
                        Ok(0) => r.peer_eof = true,
                        Ok(k) => {
                            checker.check(&inb[..k])?;
                            r.got += k as u64;
                            if r.got > n {
                                return Err(format!("received {} bytes, more than {n}", r.got));
                            }
                        }
                        Err(SockError::WouldBlock) => break,
                        Err(e) => return Err(format!("tcp_recv after {} bytes: {e}", r.got)),
                    }
                }
                if last_info.elapsed() >= Duration::from_millis(500) || r.peer_eof {
                    if let Ok(info) = c.tcp_info(s) {
                        r.last_info = Some(info);
                    }
                    last_info = Instant::now();
                }
                if r.peer_eof && shut && !r.closed {
                    if r.got != n {
                        return Err(format!("end of stream after {} of {n} bytes", r.got));
                    }
                    c.tcp_close(s, now).map_err(|e| format!("tcp_close: {e}"))?;
                    r.closed = true;
                }
                // Done once our FIN is acknowledged (the connection left
                // the closing states) and nothing is left to send.
                Ok(r.closed && c.tcp_lingering() == 0 && !c.has_tx())
            })()
        };
        progress.stack_sent.store(r.sent, Ordering::Relaxed);
        progress.stack_got.store(r.got, Ordering::Relaxed);
        match step {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        match driver.poll(clock::now_ns()) {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = driver.wait(Duration::from_millis(1)) {
                    break Err(format!("driver wait: {e}"));
                }
            }
            Err(e) => break Err(format!("driver poll: {e}")),
        }
    };
    r.failure = result.err();
    let k = &stack.header().counters;
    r.retransmits = k.tcp_retransmits.get();
    r.fast_retransmits = k.tcp_fast_retransmits.get();
    r.ooo_segments = k.tcp_ooo_segments.get();
    r.rx_drop_tcp = k.rx_drop_tcp.get();
    r.rx_drop_ip_csum = k.rx_drop_ip_csum.get();
    r.drop_no_buffers = k.drop_no_buffers.get();
    r.rx_frames = k.rx_frames.get();
    r.tx_frames = k.tx_frames.get();
    r.nonzero = k.iter().filter(|&(_, v)| v != 0).collect();
    r
}

/// The kernel's sending half: `n` bytes of stream `UP`, then FIN.
fn kernel_writer(mut s: TcpStream, n: u64, progress: Arc<Progress>) -> Result<(), String> {
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0u64;
    while off < n {
        let k = buf.len().min((n - off) as usize);
        fill(UP, off, &mut buf[..k]);
        s.write_all(&buf[..k])
            .map_err(|e| format!("kernel write after {off} bytes: {e}"))?;
        off += k as u64;
        progress.kernel_sent.store(off, Ordering::Relaxed);
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("kernel shutdown(write): {e}"))
}

/// The kernel's receiving half: exactly `n` bytes of stream `DOWN`, then EOF.
fn kernel_reader(mut s: TcpStream, n: u64, progress: Arc<Progress>) -> Result<(), String> {
    let mut buf = vec![0u8; 256 << 10];
    let mut checker = Checker::new(DOWN);
    let mut got = 0u64;
    let mut last = Instant::now();
    loop {
        let k = s
            .read(&mut buf)
            .map_err(|e| format!("kernel read after {got} bytes: {e}"))?;
        let gap = last.elapsed();
        last = Instant::now();
        if gap > PAUSE && got > 0 {
            progress.kernel_rx_pauses.fetch_add(1, Ordering::Relaxed);
            progress
                .kernel_rx_pause_ns
                .fetch_add(gap.as_nanos() as u64, Ordering::Relaxed);
        }
        if k == 0 {
            break;
        }
        checker.check(&buf[..k])?;
        got += k as u64;
        progress.kernel_got.store(got, Ordering::Relaxed);
        if got > n {
            return Err(format!("kernel received {got} bytes, more than {n}"));
        }
    }
    if got != n {
        return Err(format!("kernel: end of stream after {got} of {n} bytes"));
    }
    Ok(())
}

/// TCP checksum errors counted by the kernel of namespace `ns`.
fn tcp_csum_errors(ns: &NetNs) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]).expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InCsumErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A counter of `ifname` in namespace `ns` (/sys/class/net/IF/statistics).
fn link_stat(ns: &NetNs, ifname: &str, name: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/{name}");
    let out = ns.exec(&["cat", &path]).expect("read link statistics");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A thread's result, once it has one: `None` while it runs.
fn poll_join<T>(h: &mut Option<JoinHandle<T>>, what: &str) -> Option<Result<T, String>> {
    if !h.as_ref().is_some_and(|h| h.is_finished()) {
        return None;
    }
    Some(h.take().unwrap().join().map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} panicked: {msg}")
    }))
}

#[test]
fn xdp_tcp_bulk_both_ways_through_impairment() {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let n = bulk_bytes();
    let t0 = Instant::now();
    let hosts = ThreeHosts::create(TAG, SUBNET).expect("create three hosts");
    let imp = Impairment {
        loss: 0.01,
        duplicate: 0.005,
        reorder: 0.01,
        reorder_delay: Duration::from_millis(2),
        // (The forwarder never leaves a corrupted frame whose checksum field
        // reads as offloaded, which a stack behind a veth rightly trusts.)
        corrupt: 0.002,
        seed: 0x5eed_0090,
    };
    let fwd =
        Forwarder::start(hosts.m.name(), &hosts.m_a, &hosts.m_b, imp).expect("start the forwarder");
    let (a, b) = (hosts.a.name().to_string(), hosts.b.name().to_string());
    let stack_addr = SocketAddrV4::new(hosts.ip_b, PORT);

    // The stack in B.
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut stack_thread = Some({
        let (ifname, progress, stop) = (hosts.if_b.clone(), progress.clone(), stop.clone());
        let b = b.clone();
        std::thread::spawn(move || {
            in_netns(&b, move || serve(&ifname, n, &progress, &stop, ready_tx))
                .expect("enter namespace B")
        })
    });
    let describe = match ready_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(d)) => d,
        other => {
            stop.store(true, Ordering::Relaxed);
            let _ = stack_thread.take().unwrap().join();
            panic!("the stack did not start: {other:?}");
        }
    };
    let setup = t0.elapsed();

    // The kernel in A.
    let conn = match in_netns(&a, move || {
        TcpStream::connect_timeout(&stack_addr.into(), Duration::from_secs(10))
    })
    .expect("enter namespace A")
    {
        Ok(c) => c,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            let r = stack_thread.take().unwrap().join();
            panic!("connect to the stack at {stack_addr}: {e}; stack: {r:?}");
        }
    };
    let t1 = Instant::now();
    let mut writer = Some({
        let (s, p) = (conn.try_clone().unwrap(), progress.clone());
        std::thread::spawn(move || kernel_writer(s, n, p))
    });
    let mut reader = Some({
        let (s, p) = (conn.try_clone().unwrap(), progress.clone());
        std::thread::spawn(move || kernel_reader(s, n, p))
    });

    // Watch: every part finished, or a failure, a stall or the deadline.
    let deadline = t0 + DEADLINE;
    let mut failures: Vec<String> = Vec::new();
    let (mut w_done, mut r_done, mut report) = (false, false, None::<StackReport>);
    let mut kernel_time = Duration::ZERO;
    let (mut last_total, mut last_change) = (0u64, Instant::now());
    let mut next_log = Instant::now() + Duration::from_secs(10);
    while failures.is_empty() && !(w_done && r_done && report.is_some()) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(res) = poll_join(&mut writer, "kernel writer") {
            w_done = true;
            if let Err(e) = res.and_then(|r| r) {
                failures.push(e);
            }
        }
        if let Some(res) = poll_join(&mut reader, "kernel reader") {
            r_done = true;
            if let Err(e) = res.and_then(|r| r) {
                failures.push(e);
            }
        }
        if w_done && r_done && kernel_time.is_zero() {
            kernel_time = t1.elapsed();
        }
        if let Some(res) = poll_join(&mut stack_thread, "stack thread") {
            match res {
                Ok(r) => {
                    if let Some(e) = &r.failure {
                        failures.push(format!("stack: {e}"));
                    }
                    report = Some(r);
                }
                Err(e) => failures.push(e),
            }
        }
        let total = progress.total();
        if total != last_total {
            (last_total, last_change) = (total, Instant::now());
        }
        let now = Instant::now();
        if now >= next_log {
            next_log = now + Duration::from_secs(10);
            eprintln!(
                "[{TAG}] {:.0?}: {}; {:?}",
                t1.elapsed(),
                progress.describe(n),
                fwd.stats()
            );
        }
        if now >= deadline {
            failures.push(format!("not done within {DEADLINE:?}"));
        } else if now - last_change >= STALL {
            failures.push(format!("no progress for {STALL:?}"));
        }
    }
    let run = t1.elapsed();

    // Unblock and collect whatever still runs.
    if !failures.is_empty() {
        let _ = conn.shutdown(Shutdown::Both);
        stop.store(true, Ordering::Relaxed);
    }
    for (h, what) in [
        (&mut writer, "kernel writer"),
        (&mut reader, "kernel reader"),
    ] {
        if let Some(h) = h.take() {
            if let Ok(Err(e)) = h.join() {
                failures.push(format!("{what} (after the stop): {e}"));
            }
        }
    }
    if let Some(h) = stack_thread.take() {
        if let Ok(r) = h.join() {
            report = Some(r);
        }
    }
    drop(conn);
    let stats: ImpairStats = fwd.stop();
    let csum_a = tcp_csum_errors(&hosts.a);
    let csum_b = tcp_csum_errors(&hosts.b);
    // Frames the veth refused from the stack (over the MTU, for one).
    let veth_tx_dropped = link_stat(&hosts.b, &hosts.if_b, "tx_dropped");
    let r = report.unwrap_or_default();
    let secs = run.as_secs_f64();
    eprintln!(
        "[{TAG}] {describe}: {} MiB each way in {run:.2?} ({:.1} MB/s each way, {:.1} MB/s total; \
         kernel side done after {kernel_time:.2?}); setup {setup:.2?}\n\
         [{TAG}] {}; the kernel's receive stream paused (> {PAUSE:?}) {} times, {:.2?} in all\n\
         [{TAG}] forwarder: {stats:?}\n\
         [{TAG}] stack: retransmits {} (fast {}), out-of-order segments {}, TCP drops \
         (bad checksum or malformed) {}, IP checksum drops {}, no-buffer drops {}, \
         rx frames {}, tx frames {}, closed {}, last {:?}\n\
         [{TAG}] stack counters: {:?}\n\
         [{TAG}] kernel TCP checksum errors: A {csum_a}, B {csum_b}; frames the veth {} \
         refused from B (tx_dropped): {veth_tx_dropped}",
        n >> 20,
        n as f64 / secs / 1e6,
        2.0 * n as f64 / secs / 1e6,
        progress.describe(n),
        progress.kernel_rx_pauses.load(Ordering::Relaxed),
        Duration::from_nanos(progress.kernel_rx_pause_ns.load(Ordering::Relaxed)),
        r.retransmits,
        r.fast_retransmits,
        r.ooo_segments,
        r.rx_drop_tcp,
        r.rx_drop_ip_csum,
        r.drop_no_buffers,
        r.rx_frames,
        r.tx_frames,
        r.closed,
        r.last_info,
        r.nonzero,
        hosts.if_b,
    );
    assert!(failures.is_empty(), "[{TAG}] failed: {failures:#?}");
    drop(hosts);

    // Both streams arrived whole and byte-exact (checked as they came).
    assert_eq!(r.sent, n, "stack sent");
    assert_eq!(r.got, n, "stack received");
    assert!(r.peer_eof && r.closed, "stack saw the end and closed");
    assert_eq!(progress.kernel_got.load(Ordering::Relaxed), n);
    assert_eq!(r.mode, Some(XdpMode::Native), "{describe}");
    // Every frame the stack sent fitted the link (none over the MTU).
    assert_eq!(veth_tx_dropped, 0, "the veth refused frames of the stack");

    if n < MIN_BYTES_FOR_COUNTS {
        eprintln!(
            "[{TAG}] {} MiB is too little to insist on every impairment; not checking the counts",
            n >> 20
        );
        return;
    }
    // Every impairment happened...
    assert!(stats.dropped > 0, "no frame lost: {stats:?}");
    assert!(stats.duplicated > 0, "no frame duplicated: {stats:?}");
    assert!(stats.reordered > 0, "no frame reordered: {stats:?}");
    assert!(stats.corrupted > 0, "no frame corrupted: {stats:?}");
    // ...and both ends recovered: the stack resent what was lost, queued
    // what came out of order and rejected what was corrupted, as did Linux.
    assert!(r.retransmits > 0, "the stack never retransmitted");
    assert!(r.ooo_segments > 0, "the stack never saw out-of-order data");
    assert!(
        r.rx_drop_tcp > 0,
        "the stack rejected no corrupted segment ({} corrupted both ways)",
        stats.corrupted
    );
    assert!(csum_a > 0, "Linux in A rejected no corrupted segment");
}
