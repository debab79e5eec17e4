//! Real, unmodified binaries under `rbypass run`: both ends on one named
//! stack (loopback acceleration), each checked for correct results and, from
//! the stack's own counters, for having gone through the stack. Mixed runs
//! (one end plain) must work unchanged.
//!
//! Needs sockperf, iperf3, redis-server/redis-cli/redis-benchmark, nginx,
//! curl, wrk, memcached, memcslap, socat and python3 (`.ci/run` installs
//! them) and `target/release/librbypass.so` (scripts/test.sh builds it).
//! Ports are below the kernel's ephemeral range (32768+), so no autobound
//! socket takes them between tests.

mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rbypass() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbypass"))
}

/// Panics with the package to install when a tool is missing.
fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| PathBuf::from(d).join(tool).is_file());
    assert!(
        found,
        "{tool} is needed by tests/apps.rs (.ci/run installs it with apt-get)"
    );
    let lib = rbypass().with_file_name("librbypass.so");
    assert!(
        lib.exists(),
        "{} is missing: run cargo build --release",
        lib.display()
    );
}

/// A named stack for one test; its arena file goes when the test ends.
struct StackName(String);

impl StackName {
    fn new(test: &str) -> StackName {
        StackName(format!("apps-{test}-{}", std::process::id()))
    }

    /// A stack counter, from `rbypass stackdump counters`.
    fn counter(&self, name: &str) -> u64 {
        support::stackdump::counter(&self.0, name)
    }

    /// Asserts that at least `min` frames crossed the stack since `before`.
    fn carried(&self, before: u64, min: u64, what: &str) -> u64 {
        let now = self.counter("rx_frames");
        assert!(
            now - before >= min,
            "{what}: only {} frames went through the stack (want {min})",
            now - before
        );
        now
    }
}

impl Drop for StackName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

/// How a program runs: plainly, or under `rbypass run --name`.
fn command(stack: Option<&StackName>, argv: &[&str]) -> Command {
    let mut c = match stack {
        None => Command::new(argv[0]),
        Some(s) => {
            let mut c = Command::new(rbypass());
            c.args(["run", "--name", &s.0, "--", argv[0]]);
            // The test reads the stack's counters after the apps exit.
            c.env("RBYPASS_KEEP_STACK", "1");
            c
        }
    };
    c.args(&argv[1..])
        .env_remove("RBYPASS_NAME")
        .env_remove("LD_PRELOAD");
    c
}

/// A background server in its own process group (with the children it
/// forks): the group is terminated (SIGTERM, then SIGKILL) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn serve(stack: Option<&StackName>, argv: &[&str]) -> Server {
    Server(
        command(stack, argv)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}")),
    )
}

/// Runs a client to completion within `limit` (killed after it), with
/// `input` on stdin; asserts it succeeded and returns its output.
fn run(stack: Option<&StackName>, argv: &[&str], input: &[u8], limit: Duration) -> Output {
    let mut child = command(stack, argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
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
    if rx.recv_timeout(limit).is_err() {
        // SAFETY: killing our own child, which overran its time.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let out = waiter.join().unwrap().unwrap();
        panic!(
            "{argv:?} did not finish in {limit:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = feeder.join();
    let out = waiter.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Waits until something listens on TCP `port` (read from /proc, so the
/// probe itself sends nothing).
fn wait_listen(port: u16) {
    let hex = format!(":{port:04X} ");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let t = std::fs::read_to_string(f).unwrap_or_default();
            // Local address column ends with :PORT; state 0A is LISTEN.
            if t.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(hex.trim()))
                    && l.split_whitespace().nth(3) == Some("0A")
            }) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// Waits until a UDP socket is bound to `port`.
fn wait_udp(port: u16) {
    let hex = format!(":{port:04X}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        for f in ["/proc/net/udp", "/proc/net/udp6"] {
            let t = std::fs::read_to_string(f).unwrap_or_default();
            if t.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&hex))
            }) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing is bound to UDP port {port}");
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sockperf_ping_pong_and_throughput_with_select_poll_epoll() {
    need("sockperf");
    for (proto, port) in [("U", 21001u16), ("T", 21002)] {
        for iomux in ["select", "poll", "epoll"] {
            let s = StackName::new(&format!("sockperf-{proto}-{iomux}"));
            let feed = std::env::temp_dir().join(format!("{}.feed", s.0));
            std::fs::write(&feed, format!("{proto}:127.0.0.1:{port}\n")).unwrap();
            let feed = feed.to_str().unwrap().to_owned();
            let _srv = serve(Some(&s), &["sockperf", "server", "-f", &feed, "-F", iomux]);
            if proto == "T" {
                wait_listen(port);
            } else {
                wait_udp(port);
            }
            let client = |sub: &str| {
                let argv = [
                    "sockperf", sub, "-f", &feed, "-F", iomux, "-t", "1", "-m", "64",
                ];
                text(&run(Some(&s), &argv, b"", LIMIT))
            };
            let before = s.counter("rx_frames");
            let pp = client("ping-pong");
            assert!(
                pp.contains("Summary: Latency is"),
                "{proto} {iomux} ping-pong:\n{pp}"
            );
            // "Total 118163 observations" (with colour codes around it).
            let observations: u64 = pp
                .split(" observations")
                .next()
                .and_then(|t| t.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(
                observations > 1000,
                "{proto} {iomux}: {observations} round trips:\n{pp}"
            );
            let after = s.carried(before, 2 * observations, "ping-pong");
            let tp = client("throughput");
            assert!(
                tp.contains("Summary: Message Rate is"),
                "{proto} {iomux} throughput:\n{tp}"
            );
            s.carried(after, 1000, "throughput");
            let _ = std::fs::remove_file(&feed);
        }
    }
}

#[test]
fn iperf3_tcp() {
    need("iperf3");
    let s = StackName::new("iperf3");
    let _srv = serve(Some(&s), &["iperf3", "-s", "-p", "21010", "-1"]);
    wait_listen(21010);
    let out = text(&run(
        Some(&s),
        &[
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            "21010",
            "-t",
            "2",
            "-f",
            "m",
        ],
        b"",
        LIMIT,
    ));
    let receiver = out
        .lines()
        .find(|l| l.contains("receiver"))
        .unwrap_or_else(|| panic!("no receiver line:\n{out}"));
    // "[  5]   0.00-2.00 sec  1.23 GBytes  5270 Mbits/sec   receiver"
    let mbits: f64 = receiver
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "Mbits/sec")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no rate in {receiver}"));
    assert!(mbits > 100.0, "{receiver}");
    s.carried(0, 10_000, "iperf3");
}

#[test]
fn redis_round_trips_and_benchmark() {
    need("redis-server");
    need("redis-benchmark");
    let s = StackName::new("redis");
    let _srv = serve(
        Some(&s),
        &[
            "redis-server",
            "--port",
            "21020",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    wait_listen(21020);
    let cli = |stack: Option<&StackName>, args: &[&str]| -> String {
        let mut argv = vec!["redis-cli", "-p", "21020"];
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&run(stack, &argv, b"", LIMIT).stdout)
            .trim()
            .to_owned()
    };
    assert_eq!(cli(Some(&s), &["set", "greeting", "hello rbypass"]), "OK");
    assert_eq!(cli(Some(&s), &["get", "greeting"]), "hello rbypass");
    let before = s.carried(0, 4, "redis-cli");
    // A kernel client against the accelerated server (its kernel listener).
    assert_eq!(cli(None, &["get", "greeting"]), "hello rbypass");
    for pipeline in ["1", "16"] {
        let out = text(&run(
            Some(&s),
            &[
                "redis-benchmark",
                "-p",
                "21020",
                "-n",
                "20000",
                "-c",
                "4",
                "-P",
                pipeline,
                "-t",
                "get,set",
                "-q",
            ],
            b"",
            LIMIT,
        ));
        for op in ["SET", "GET"] {
            assert!(
                out.lines()
                    .any(|l| l.contains(&format!("{op}:")) && l.contains("requests per second")),
                "-P {pipeline} {op}:\n{out}"
            );
        }
    }
    s.carried(before, 2 * 20_000 / 16, "redis-benchmark");
    assert_eq!(cli(Some(&s), &["get", "greeting"]), "hello rbypass");
}

#[test]
fn nginx_serves_files_to_curl_and_wrk() {
    need("nginx");
    need("curl");
    need("wrk");
    let s = StackName::new("nginx");
    let dir = std::env::temp_dir().join(&s.0);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let body: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761u32) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("www/big.bin"), &body).unwrap();
    std::fs::write(dir.join("www/index.html"), b"hello\n").unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; master_process off; worker_processes 1;\n\
             error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; sendfile on; client_body_temp_path {d};\n\
             server {{ listen 127.0.0.1:21030; root {d}/www; }} }}\n"
        ),
    )
    .unwrap();
    let conf = dir.join("nginx.conf").display().to_string();
    let prefix = dir.display().to_string();
    let _srv = serve(Some(&s), &["nginx", "-c", &conf, "-p", &prefix]);
    wait_listen(21030);
    let url = "http://127.0.0.1:21030/big.bin";
    let got = run(Some(&s), &["curl", "-sS", url], b"", LIMIT).stdout;
    assert!(
        got == body,
        "sendfile through the stack: {} bytes of {}",
        got.len(),
        body.len()
    );
    let before = s.carried(0, 100, "curl");
    // A kernel client against the accelerated server.
    assert!(run(None, &["curl", "-sS", url], b"", LIMIT).stdout == body);
    let out = text(&run(
        Some(&s),
        &[
            "wrk",
            "-t1",
            "-c8",
            "-d1",
            "http://127.0.0.1:21030/index.html",
        ],
        b"",
        LIMIT,
    ));
    assert!(out.contains("Requests/sec"), "{out}");
    assert!(!out.contains("Non-2xx"), "{out}");
    s.carried(before, 1000, "wrk");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memcached_with_memcslap() {
    need("memcached");
    need("memcslap");
    let s = StackName::new("memcached");
    let _srv = serve(
        Some(&s),
        &[
            "memcached",
            "-p",
            "21040",
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-u",
            "root",
            "-t",
            "2",
        ],
    );
    wait_listen(21040);
    let out = text(&run(
        Some(&s),
        &[
            "memcslap",
            "--servers=127.0.0.1:21040",
            "--execute-number=2000",
            "--concurrency=2",
        ],
        b"",
        LIMIT,
    ));
    assert!(out.contains("Time total"), "{out}");
    assert!(!out.contains("Fatal") && !out.contains("TIMEOUT"), "{out}");
    s.carried(0, 2000, "memcslap");
}

#[test]
fn socat_tcp_and_udp_relays() {
    need("socat");
    let s = StackName::new("socat");
    // TCP: client -> relay -> echo (cat behind a forked, exec'd child).
    let _echo = serve(
        Some(&s),
        &["socat", "TCP-LISTEN:21051,reuseaddr,fork", "EXEC:cat"],
    );
    let _relay = serve(
        Some(&s),
        &[
            "socat",
            "TCP-LISTEN:21050,reuseaddr,fork",
            "TCP:127.0.0.1:21051",
        ],
    );
    wait_listen(21051);
    wait_listen(21050);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = run(
        Some(&s),
        &["socat", "-t", "5", "-", "TCP:127.0.0.1:21050"],
        &data,
        LIMIT,
    );
    assert!(
        out.stdout == data,
        "TCP relay echoed {} of {} bytes",
        out.stdout.len(),
        data.len()
    );
    let before = s.carried(0, 2 * 300_000 / 1460, "TCP relay");
    // UDP: client -> relay -> echo.
    let _uecho = serve(Some(&s), &["socat", "UDP-RECVFROM:21053,fork", "EXEC:cat"]);
    let _urelay = serve(
        Some(&s),
        &[
            "socat",
            "UDP-RECVFROM:21052,fork",
            "UDP-SENDTO:127.0.0.1:21053",
        ],
    );
    wait_udp(21053);
    wait_udp(21052);
    let out = run(
        Some(&s),
        &["socat", "-t", "2", "-", "UDP:127.0.0.1:21052"],
        b"datagram through two relays\n",
        LIMIT,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "datagram through two relays\n"
    );
    s.carried(before, 4, "UDP relay");
}

const ASYNCIO_ECHO: &str = r#"
import asyncio, sys

async def handle(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()

async def server(port):
    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with srv:
        await srv.serve_forever()

async def one(port, i):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    msg = bytes((i + k) % 256 for k in range(50_000))
    w.write(msg)
    await w.drain()
    got = await r.readexactly(len(msg))
    assert got == msg, f"client {i}: echo differs"
    w.close()
    await w.wait_closed()

async def client(port):
    await asyncio.gather(*(one(port, i) for i in range(20)))
    print("ok 20")

port = int(sys.argv[2])
asyncio.run(server(port) if sys.argv[1] == "server" else client(port))
"#;

#[test]
fn python_asyncio_echo() {
    need("python3");
    let s = StackName::new("asyncio");
    let script = std::env::temp_dir().join(format!("{}.py", s.0));
    std::fs::write(&script, ASYNCIO_ECHO).unwrap();
    let script = script.to_str().unwrap().to_owned();
    let _srv = serve(Some(&s), &["python3", &script, "server", "21060"]);
    wait_listen(21060);
    let out = run(
        Some(&s),
        &["python3", &script, "client", "21060"],
        b"",
        LIMIT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 20");
    s.carried(0, 40, "asyncio");
    // An accelerated client against a kernel server works unchanged.
    let k = StackName::new("asyncio-kernel");
    let _ksrv = serve(None, &["python3", &script, "server", "21061"]);
    wait_listen(21061);
    let out = run(
        Some(&k),
        &["python3", &script, "client", "21061"],
        b"",
        LIMIT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 20");
    let _ = std::fs::remove_file(&script);
}
