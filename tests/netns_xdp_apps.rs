//! Real, unmodified applications over AF_XDP between two network namespaces
//! joined by a veth pair (created per test and always removed): the server
//! runs in namespace B under `rbypass run --nic xdp:IF_B`, the client in
//! namespace A either on the kernel or under `rbypass run --nic xdp:IF_A`
//! too (rbypass on both ends). sockperf UDP and TCP ping-pong, iperf3 TCP
//! and redis (redis-benchmark plain and pipelined, then a SET/GET round trip
//! checked byte for byte) must give correct results, and each stack must
//! show that the traffic went through it: `rbypass stackdump` lists it with
//! an `xdp:IFACE` NIC, and its rx_frames grew by at least what the
//! application says it exchanged.
//!
//! Every process runs with RBYPASS_NO_FAIL=0, so a device that cannot be
//! opened ends it with a clear error instead of leaving the application
//! silently on the kernel; the counters prove acceleration either way.
//!
//! Needs root (otherwise every test prints "skipped" and passes), sockperf,
//! iperf3, redis-server, redis-cli and redis-benchmark (`.ci/run` installs
//! them), and target/release/librbypass.so (`cargo build --release`).
//! Subnets 198.18.80.0/24 to 198.18.87.0/24, TCP/UDP ports 21101 to 21108.

mod support;

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, tool_available, NetNs};
use support::veth::TwoHosts;

/// Longest a client may run (each is bounded to a few seconds itself).
const LIMIT: Duration = Duration::from_secs(25);

fn rbypass() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbypass"))
}

/// What runs the client in namespace A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The Linux kernel: a plain process.
    Kernel,
    /// rbypass over AF_XDP on A's end of the veth.
    Rbypass,
}

/// Whether the test can run: false (after saying "skipped") without root
/// and namespaces; panics with what to install when a tool is missing.
fn ready(tools: &[&str]) -> bool {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return false;
    }
    for tool in tools {
        assert!(
            tool_available(tool),
            "{tool} is needed by tests/netns_xdp_apps.rs (.ci/run installs it with apt-get)"
        );
    }
    let lib = rbypass().with_file_name("librbypass.so");
    assert!(
        lib.exists(),
        "{} is missing: run cargo build --release",
        lib.display()
    );
    true
}

/// A named stack on one end of the veth; its arena file goes when the test
/// ends (also on panic).
struct Stack {
    name: String,
    ifname: String,
}

impl Stack {
    fn new(tag: &str, role: &str, ifname: &str) -> Stack {
        let name = format!("xapp-{tag}-{role}-{}", std::process::id());
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{name}"));
        Stack {
            name,
            ifname: ifname.to_string(),
        }
    }

    fn stackdump(&self, args: &[&str]) -> String {
        let out = Command::new(rbypass())
            .arg("stackdump")
            .args(args)
            .output()
            .expect("rbypass stackdump");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A counter, from `rbypass stackdump counters --stack NAME`.
    fn counter(&self, counter: &str) -> u64 {
        support::stackdump::counter(&self.name, counter)
    }

    /// Asserts that `rbypass stackdump` lists the stack with NIC
    /// `xdp:IFACE ...` (and, if `alive`, its creator still running);
    /// returns the NIC column.
    fn assert_on_xdp(&self, alive: bool) -> String {
        let text = self.stackdump(&[]);
        // STACK CREATOR ALIVE SOCKETS BUFS LOCK IP/LEN MAC NIC... PROCS
        let row: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&self.name.as_str()))
            .unwrap_or_else(|| panic!("stack {} is not listed:\n{text}", self.name));
        assert!(
            row.len() >= 9 && row[8] == format!("xdp:{}", self.ifname),
            "stack {} is not on xdp:{} (NIC column):\n{text}",
            self.name,
            self.ifname
        );
        if alive {
            assert_eq!(row[2], "yes", "stack {} is not alive:\n{text}", self.name);
        }
        // The last column is PROCS (live/total).
        row[8..row.len() - 1].join(" ")
    }

    /// Waits until the stack has a socket bound to `ip:port` (`tcp`:
    /// listening), checking meanwhile that the server is still running.
    fn wait_bound(&self, server: &mut Server, tcp: bool, ip: &str, port: u16) {
        let local = format!("{ip}:{port}");
        let proto = if tcp { "tcp" } else { "udp" };
        let start = Instant::now();
        loop {
            let text = self.stackdump(&["netstat", "--stack", &self.name]);
            // STACK PROTO STATE RECV-Q SEND-Q LOCAL PEER ...
            let bound = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 5
                    && w[0] == self.name
                    && w[1] == proto
                    && w[5] == local
                    && (!tcp || w[2] == "LISTEN")
            });
            if bound {
                return;
            }
            server.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{}: no {proto} socket on {local} in stack {} after 20 s:\n{text}\nserver log:\n{}",
                server.what,
                self.name,
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.name));
    }
}

/// `ip netns exec NS [rbypass run --nic xdp:IF --name NAME --] argv...`,
/// with none of the test's own RBYPASS_* settings or LD_PRELOAD.
fn command(ns: &NetNs, stack: Option<&Stack>, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name()]);
    if let Some(s) = stack {
        c.arg(rbypass()).args([
            "run",
            "--nic",
            &format!("xdp:{}", s.ifname),
            "--name",
            &s.name,
            "--",
        ]);
    }
    c.args(argv);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RBYPASS_") {
            c.env_remove(k);
        }
    }
    c.env_remove("LD_PRELOAD")
        .env("RBYPASS_NO_FAIL", "0")
        .env("RBYPASS_KEEP_STACK", "1");
    c
}

/// A background server in its own process group, its output in a log file;
/// the group is killed (SIGKILL) when dropped, so nothing of it outlives the
/// test, and the log goes.
struct Server {
    child: Child,
    what: String,
    log: PathBuf,
    reaped: bool,
}

impl Server {
    fn start(ns: &NetNs, stack: &Stack, argv: &[&str]) -> Server {
        let log = std::env::temp_dir().join(format!("{}.log", stack.name));
        let file = File::create(&log).expect("server log");
        let child = command(ns, Some(stack), argv)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("server log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        Server {
            child,
            what: argv.join(" "),
            log,
            reaped: false,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the server's output if it has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.reaped = true;
            panic!("{} exited ({status}):\n{}", self.what, self.log());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signalling the process group of our own child, which
            // is not reaped yet, so its id cannot have been reused.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs a client in `ns` (under rbypass on `stack` if given) to completion
/// within [`LIMIT`] (its process group is killed after that), with `input`
/// on stdin; asserts it succeeded and returns its stdout and stderr.
///
/// After a client under rbypass, waits until its XDP program is gone from
/// the interface (nothing of the stack lingers), so another stack can take
/// the interface and no process is left when the namespaces go.
fn run(ns: &NetNs, stack: Option<&Stack>, argv: &[&str], input: &[u8]) -> (String, String) {
    let mut child = command(ns, stack, argv)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    let timed_out = rx.recv_timeout(LIMIT).is_err();
    if timed_out {
        // SAFETY: killing the process group of our own child, which overran
        // its time (the waiter has not reaped it: it did not report).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = feeder.join();
    let out = waiter.join().expect("waiter").expect("client output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !timed_out,
        "{argv:?} did not finish in {LIMIT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    if let Some(s) = stack {
        wait_xdp_detached(ns, &s.ifname);
    }
    (stdout, stderr)
}

/// Waits until interface `ifname` of `ns` has no XDP program attached.
fn wait_xdp_detached(ns: &NetNs, ifname: &str) {
    let start = Instant::now();
    loop {
        let out = ns.ip(&["link", "show", "dev", ifname]).expect("ip link");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("prog/xdp") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "an XDP program is still attached to {ifname} in {} 10 s after its client exited:\n{text}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that the stack grew its rx_frames by at least `min` since
/// `before`; returns the growth.
fn assert_grew(stack: &Stack, before: u64, min: u64, what: &str) -> u64 {
    let grew = stack.counter("rx_frames") - before;
    assert!(
        grew >= min,
        "{what}: stack {} received only {grew} frames over AF_XDP (want at least {min})",
        stack.name
    );
    grew
}

// ---------------------------------------------------------------------------
// sockperf

/// The number before " observations" in sockperf's output
/// ("...Total 69001 observations", with colour codes around it).
fn observations(out: &str) -> u64 {
    out.split(" observations")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn sockperf_case(tag: &str, subnet: u8, port: u16, tcp: bool, client: Client) {
    if !ready(&["sockperf"]) {
        return;
    }
    let what = format!(
        "sockperf {} ping-pong, {client:?} client",
        if tcp { "TCP" } else { "UDP" }
    );
    let hosts = TwoHosts::create(tag, subnet, 1).expect("namespaces");
    let server_stack = Stack::new(tag, "b", &hosts.if_b);
    let client_stack = (client == Client::Rbypass).then(|| Stack::new(tag, "a", &hosts.if_a));
    let ip_b = hosts.ip_b.to_string();
    let port_s = port.to_string();
    let mut argv = vec!["sockperf", "server", "-i", &ip_b, "-p", &port_s];
    if tcp {
        argv.push("--tcp");
    }
    let mut server = Server::start(&hosts.b, &server_stack, &argv);
    server_stack.wait_bound(&mut server, tcp, &ip_b, port);
    let nic = server_stack.assert_on_xdp(true);
    let before = server_stack.counter("rx_frames");

    let mut argv = vec![
        "sockperf",
        "ping-pong",
        "-i",
        &ip_b,
        "-p",
        &port_s,
        "-t",
        "3",
        "-m",
        "64",
    ];
    if tcp {
        argv.push("--tcp");
    }
    let (stdout, stderr) = run(&hosts.a, client_stack.as_ref(), &argv, b"");
    let out = stdout + &stderr;
    assert!(!out.contains("ERROR"), "{what}:\n{out}");
    let summary = out
        .lines()
        .find(|l| l.contains("Summary: Latency is"))
        .unwrap_or_else(|| panic!("{what}: no latency summary:\n{out}"));
    assert!(
        out.contains(
            "# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0"
        ),
        "{what}: lost, duplicated or reordered messages:\n{out}"
    );
    // Tens of thousands of round trips in 3 s on an idle machine, a few
    // thousand with several tests spinning on 2 cores: 1000 only catches a
    // stall.
    let n = observations(&out);
    assert!(n >= 1000, "{what}: only {n} round trips:\n{out}");
    // Every round trip is at least one frame into the server's stack.
    let grew = assert_grew(&server_stack, before, n.max(1000), &what);
    server_stack.assert_on_xdp(true);
    server.check_running();
    let mut line = format!(
        "{what}: {} | {n} observations | server {nic}: +{grew} rx_frames",
        summary.trim_start_matches("sockperf: ").trim()
    );
    if let Some(c) = &client_stack {
        let nic = c.assert_on_xdp(false);
        let rx = assert_grew(c, 0, n.max(1000), &what);
        line += &format!(" | client {nic}: {rx} rx_frames");
    }
    let p99 = out
        .lines()
        .find(|l| l.contains("percentile 99.000"))
        .map(|l| l.trim_start_matches("sockperf: ").trim().to_string())
        .unwrap_or_default();
    eprintln!("{line} | {p99}");
}

#[test]
fn sockperf_udp_kernel_client() {
    sockperf_case("xapuk", 80, 21101, false, Client::Kernel);
}

#[test]
fn sockperf_udp_rbypass_both_ends() {
    sockperf_case("xapub", 81, 21102, false, Client::Rbypass);
}

#[test]
fn sockperf_tcp_kernel_client() {
    sockperf_case("xaptk", 82, 21103, true, Client::Kernel);
}

#[test]
fn sockperf_tcp_rbypass_both_ends() {
    sockperf_case("xaptb", 83, 21104, true, Client::Rbypass);
}

// ---------------------------------------------------------------------------
// iperf3

/// The number after `"key":` in the first JSON object named `section`.
fn json_number(json: &str, section: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{section}\""))?;
    let rest = &json[at..];
    let k = rest.find(&format!("\"{key}\""))?;
    let rest = rest[k + key.len() + 2..].trim_start().strip_prefix(':')?;
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        .collect();
    num.parse().ok()
}

fn iperf3_case(tag: &str, subnet: u8, port: u16, client: Client) {
    if !ready(&["iperf3"]) {
        return;
    }
    let what = format!("iperf3 TCP, {client:?} client");
    let hosts = TwoHosts::create(tag, subnet, 1).expect("namespaces");
    let server_stack = Stack::new(tag, "b", &hosts.if_b);
    let client_stack = (client == Client::Rbypass).then(|| Stack::new(tag, "a", &hosts.if_a));
    let ip_b = hosts.ip_b.to_string();
    let port_s = port.to_string();
    // Not -1: the server (and so its stack) stays alive until the counters
    // are read, and is killed with the test.
    let mut server = Server::start(
        &hosts.b,
        &server_stack,
        &["iperf3", "-s", "-B", &ip_b, "-p", &port_s],
    );
    server_stack.wait_bound(&mut server, true, &ip_b, port);
    let nic = server_stack.assert_on_xdp(true);
    let before = server_stack.counter("rx_frames");

    let (json, stderr) = run(
        &hosts.a,
        client_stack.as_ref(),
        &["iperf3", "-c", &ip_b, "-p", &port_s, "-t", "3", "-J"],
        b"",
    );
    assert!(
        !json.contains("\"error\""),
        "{what}: iperf3 reports an error:\n{json}\n{stderr}"
    );
    let number = |section, key| {
        json_number(&json, section, key)
            .unwrap_or_else(|| panic!("{what}: no {section}.{key} in:\n{json}\n{stderr}"))
    };
    let sent = number("sum_sent", "bytes") as u64;
    let received = number("sum_received", "bytes") as u64;
    let mbits = number("sum_received", "bits_per_second") / 1e6;
    assert!(
        received >= 1 << 20,
        "{what}: only {received} bytes received (sent {sent})"
    );
    // The receiver counts what it read before the end of the test: all that
    // was sent but what was still in flight or buffered.
    assert!(
        received <= sent && sent - received <= (sent / 5).max(16 << 20),
        "{what}: received {received} bytes of {sent} sent"
    );
    // Every frame the stack receives fits the 1500-byte MTU.
    let grew = assert_grew(&server_stack, before, (received / 1500).max(1000), &what);
    server_stack.assert_on_xdp(true);
    server.check_running();
    let mut line = format!(
        "{what}: sent {sent} B, received {received} B, {mbits:.0} Mbit/s | server {nic}: +{grew} rx_frames"
    );
    if let Some(c) = &client_stack {
        let nic = c.assert_on_xdp(false);
        // ACKs (and the control connection) come back through A's stack.
        let rx = assert_grew(c, 0, 1000, &what);
        line += &format!(" | client {nic}: {rx} rx_frames");
    }
    eprintln!("{line}");
}

#[test]
fn iperf3_tcp_kernel_client() {
    iperf3_case("xaipk", 84, 21105, Client::Kernel);
}

#[test]
fn iperf3_tcp_rbypass_both_ends() {
    iperf3_case("xaipb", 85, 21106, Client::Rbypass);
}

// ---------------------------------------------------------------------------
// redis

fn redis_case(tag: &str, subnet: u8, port: u16, client: Client) {
    if !ready(&["redis-server", "redis-cli", "redis-benchmark"]) {
        return;
    }
    let what = format!("redis, {client:?} client");
    let hosts = TwoHosts::create(tag, subnet, 1).expect("namespaces");
    let server_stack = Stack::new(tag, "b", &hosts.if_b);
    // One stack per client process in A, one after the other.
    let client_stacks: Vec<Stack> = (1..=3)
        .map(|i| Stack::new(tag, &format!("a{i}"), &hosts.if_a))
        .collect();
    let client_stack = |i: usize| (client == Client::Rbypass).then(|| &client_stacks[i]);
    let ip_b = hosts.ip_b.to_string();
    let port_s = port.to_string();
    let mut server = Server::start(
        &hosts.b,
        &server_stack,
        &[
            "redis-server",
            "--bind",
            &ip_b,
            "--port",
            &port_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
    );
    server_stack.wait_bound(&mut server, true, &ip_b, port);
    let nic = server_stack.assert_on_xdp(true);
    let mut line = format!("{what}: server {nic}");

    const REQUESTS: u64 = 20_000;
    for (i, pipeline) in [1u64, 16].into_iter().enumerate() {
        let before = server_stack.counter("rx_frames");
        let (stdout, stderr) = run(
            &hosts.a,
            client_stack(i),
            &[
                "redis-benchmark",
                "-h",
                &ip_b,
                "-p",
                &port_s,
                "-n",
                &REQUESTS.to_string(),
                "-c",
                "4",
                "-P",
                &pipeline.to_string(),
                "-d",
                "3",
                "-t",
                "set,get",
                "-q",
            ],
            b"",
        );
        let out = stdout + &stderr;
        // -q prints progress lines ending in \r, then one line per test.
        let rates: Vec<&str> = out
            .split(['\r', '\n'])
            .filter(|l| l.contains("requests per second"))
            .collect();
        for op in ["SET:", "GET:"] {
            assert!(
                rates.iter().any(|l| l.trim_start().starts_with(op)),
                "{what}: -P {pipeline}: no {op} rate:\n{out}"
            );
        }
        // Each batch of requests is at least one frame into the server.
        let grew = assert_grew(
            &server_stack,
            before,
            2 * REQUESTS / pipeline,
            &format!("{what}: redis-benchmark -P {pipeline}"),
        );
        line += &format!(" | -P {pipeline}: {} (+{grew} rx_frames", rates.join(", "));
        if let Some(c) = client_stack(i) {
            let nic = c.assert_on_xdp(false);
            let rx = assert_grew(c, 0, 2 * REQUESTS / pipeline, &what);
            line += &format!(", client {nic}: {rx} rx_frames");
        }
        line += ")";
    }

    // A value of many segments set and read back, and the key the benchmark
    // wrote (its default 3-byte value), in one redis-cli session.
    let value: String = (0..70_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(7) % 26) as u8))
        .collect();
    let key = format!("rbt:{}", std::process::id());
    let input = format!("SET {key} {value}\nGET {key}\nGET key:__rand_int__\nDBSIZE\n");
    let before = server_stack.counter("rx_frames");
    let (stdout, stderr) = run(
        &hosts.a,
        client_stack(2),
        &["redis-cli", "-h", &ip_b, "-p", &port_s],
        input.as_bytes(),
    );
    let replies: Vec<&str> = stdout.lines().collect();
    assert!(
        replies.len() == 4
            && replies[0] == "OK"
            && replies[1] == value
            && replies[2].len() == 3
            && replies[3] == "2",
        "{what}: redis-cli SET/GET: {} reply lines, first {:?}, GET {} bytes (want {}), then {:?}\nstderr:\n{stderr}",
        replies.len(),
        replies.first(),
        replies.get(1).map_or(0, |v| v.len()),
        value.len(),
        replies.get(2..)
    );
    let grew = assert_grew(
        &server_stack,
        before,
        value.len() as u64 / 1500,
        &format!("{what}: redis-cli"),
    );
    line += &format!(
        " | redis-cli SET/GET of {} bytes OK (+{grew} rx_frames",
        value.len()
    );
    if let Some(c) = client_stack(2) {
        let nic = c.assert_on_xdp(false);
        let rx = assert_grew(c, 0, value.len() as u64 / 1500, &what);
        line += &format!(", client {nic}: {rx} rx_frames");
    }
    line += ")";
    server_stack.assert_on_xdp(true);
    server.check_running();
    eprintln!("{line}");
}

#[test]
fn redis_kernel_client() {
    redis_case("xardk", 86, 21107, Client::Kernel);
}

#[test]
fn redis_rbypass_both_ends() {
    redis_case("xardb", 87, 21108, Client::Rbypass);
}
