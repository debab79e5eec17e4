//! `rbypass stackdump`, every subcommand, in table and JSON form, against
//! stacks this test builds with known state through the stack crate: a UDP
//! socket bound to *:5301 with a datagram queued, a TCP listener on
//! 127.0.0.1:5302, and a connected pair over the in-arena loopback with
//! bytes queued each way. `gc` and `kill` are checked against stacks whose
//! creator (a helper process, this test binary re-executed) was killed.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbypass_stack::{IfaceConfig, SocketId, Stack, StackConfig};
use serde_json::Value;
use support::stackdump::{counter, rbypass, stackdump, stackdump_json, stackdump_text};

const UDP_PORT: u16 = 5301;
const TCP_PORT: u16 = 5302;
/// Environment of the helper that creates a stack and waits to be killed.
const ROLE: &str = "RBYPASS_SDTEST_CREATE";

/// gc and kill act on every stack of the machine: one at a time.
static ADMIN: Mutex<()> = Mutex::new(());

/// Removes an arena file when dropped (also when a test fails).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn name(tag: &str) -> String {
    format!("sdtest-{}-{tag}", std::process::id())
}

/// A stack with known sockets.
struct Fixture {
    name: String,
    stack: Stack,
    udp: SocketId,
    udp_sender: SocketId,
    listener: SocketId,
    client: SocketId,
    server: SocketId,
    now: u64,
    _cleanup: Cleanup,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let name = name(tag);
        let path = PathBuf::from(format!("/dev/shm/rbypass-{name}"));
        let _ = std::fs::remove_file(&path);
        let cleanup = Cleanup(path);
        let cfg = StackConfig {
            max_sockets: 32,
            max_bufs: 256,
            ..StackConfig::default()
        };
        let mut stack = Stack::create_named(&name, &cfg, IfaceConfig::loopback()).unwrap();
        stack.set_remove_on_drop(true);
        stack.header().procs.register_self().unwrap();
        let lo = Ipv4Addr::LOCALHOST;
        let mut now = 1_000_000_000u64;
        let (udp, udp_sender, listener, client, server) = {
            let mut c = stack.lock();
            let udp = c.udp_open().unwrap();
            c.udp_bind(udp, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, UDP_PORT))
                .unwrap();
            let udp_sender = c.udp_open().unwrap();
            c.udp_send_to(udp_sender, b"datagram", SocketAddrV4::new(lo, UDP_PORT))
                .unwrap();
            let listener = c.tcp_open().unwrap();
            c.tcp_bind(listener, SocketAddrV4::new(lo, TCP_PORT))
                .unwrap();
            c.tcp_listen(listener, 8).unwrap();
            let client = c.tcp_open().unwrap();
            c.tcp_connect(client, SocketAddrV4::new(lo, TCP_PORT), now)
                .unwrap();
            let mut server = None;
            for _ in 0..50 {
                now += 1_000_000;
                c.poll(now);
                if let Ok((s, _)) = c.tcp_accept(listener) {
                    server = Some(s);
                    break;
                }
            }
            let server = server.expect("connection accepted");
            // 5 bytes reach the server and wait there unread.
            c.tcp_send(client, b"hello", now).unwrap();
            for _ in 0..5 {
                now += 1_000_000;
                c.poll(now);
            }
            assert_eq!(c.tcp_rx_pending(server).unwrap(), 5);
            // 6 more are sent but not yet delivered: one frame on the loop
            // queue, 6 bytes unacknowledged in the client's send queue.
            c.tcp_send(client, b"world!", now).unwrap();
            (udp, udp_sender, listener, client, server)
        };
        Fixture {
            name,
            stack,
            udp,
            udp_sender,
            listener,
            client,
            server,
            now,
            _cleanup: cleanup,
        }
    }
}

/// The element of a JSON array whose `key` is `value`.
fn find<'a>(arr: &'a Value, key: &str, value: &Value) -> &'a Value {
    arr.as_array()
        .unwrap_or_else(|| panic!("not an array: {arr}"))
        .iter()
        .find(|v| &v[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {arr:#}"))
}

/// The whitespace-split line of `text` whose first word is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
        .unwrap_or_else(|| panic!("no line starting with {first}:\n{text}"))
}

#[test]
fn stacks_lists_the_stack_with_creator_sockets_processes_and_nic() {
    let f = Fixture::new("stacks");
    let me = std::process::id();
    for args in [&[][..], &["stacks"][..], &["list"][..]] {
        let text = stackdump_text(args);
        let r = row(&text, &f.name);
        // STACK CREATOR ALIVE SOCKETS BUFS LOCK IP/LEN MAC NIC PROCS
        assert_eq!(r[1], me.to_string(), "{text}");
        assert_eq!(r[2], "yes", "{text}");
        assert_eq!(r[3], "5", "{text}");
        assert!(r[4].ends_with("/256"), "{text}");
        assert_eq!(r[5], "free", "{text}");
        assert_eq!(r[6], "127.0.0.1/8", "{text}");
        assert_eq!(r[8], "loop", "{text}");
        assert_eq!(r[9], "1/1", "{text}");
    }
    let j = stackdump_json(&["stacks", "--stack", &f.name]);
    let s = find(&j["stacks"], "name", &f.name.clone().into());
    assert_eq!(s["creator_pid"], me);
    assert_eq!(s["creator_alive"], true);
    assert_eq!(s["sockets"], 5);
    assert_eq!(s["live_processes"], 1);
    assert_eq!(s["max_bufs"], 256);
    assert_eq!(s["nic"], "loop");
    assert_eq!(s["iface"]["ip"], "127.0.0.1");
    assert_eq!(s["lock"]["locked"], false);
    let used = s["bufs_in_use"].as_u64().unwrap();
    // As the stack last published it (at its last poll): the datagram and
    // the 5 bytes; `packets` counts the pool itself.
    assert!(used >= 2, "a datagram and 5 bytes are held: {used}");
    assert_eq!(j["stacks"].as_array().unwrap().len(), 1, "--stack filters");
}

#[test]
fn netstat_shows_udp_listener_and_connected_pair_with_queues() {
    let f = Fixture::new("netstat");
    let text = stackdump_text(&["netstat", "--stack", &f.name]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    // STACK PROTO STATE RECV-Q SEND-Q LOCAL PEER PID CWND RTT RETX RX-DROP ID
    let by_id = |id: SocketId| {
        lines
            .iter()
            .find(|w| w[12] == id.index().to_string())
            .unwrap_or_else(|| panic!("no socket {}:\n{text}", id.index()))
    };
    let u = by_id(f.udp);
    assert_eq!(&u[1..3], &["udp", "-"], "{text}");
    assert_eq!(u[5], format!("0.0.0.0:{UDP_PORT}"));
    assert!(u[3].parse::<u32>().unwrap() > 0, "datagram queued: {text}");
    let l = by_id(f.listener);
    assert_eq!(&l[1..3], &["tcp", "LISTEN"], "{text}");
    assert_eq!(l[5], format!("127.0.0.1:{TCP_PORT}"));
    let c = by_id(f.client);
    assert_eq!(&c[1..5], &["tcp", "ESTAB", "0", "6"], "{text}");
    assert_eq!(c[6], format!("127.0.0.1:{TCP_PORT}"));
    let s = by_id(f.server);
    assert_eq!(&s[1..5], &["tcp", "ESTAB", "5", "0"], "{text}");
    assert_eq!(s[7], std::process::id().to_string());

    let j = stackdump_json(&["netstat", "--stack", &f.name]);
    let socks = &j["sockets"];
    assert_eq!(socks.as_array().unwrap().len(), 5);
    let c = find(socks, "id", &f.client.index().into());
    assert_eq!(c["proto"], "tcp");
    assert_eq!(c["state"], "ESTAB");
    assert_eq!(c["send_q"], 6);
    assert_eq!(c["handle"], f.client.0);
    assert!(c["cwnd"].as_u64().unwrap() > 0);
    let s = find(socks, "id", &f.server.index().into());
    assert_eq!(s["recv_q"], 5);
    let u = find(socks, "id", &f.udp.index().into());
    assert_eq!(u["proto"], "udp");
    assert_eq!(u["local"], format!("0.0.0.0:{UDP_PORT}"));
    assert_eq!(u["cwnd"], Value::Null);
    assert!(j["busy"].as_array().unwrap().is_empty());
}

#[test]
fn stats_lists_every_counter_with_its_description() {
    let f = Fixture::new("stats");
    let text = stackdump_text(&["stats", "--stack", &f.name]);
    assert!(text.starts_with(&format!("stack {}:", f.name)), "{text}");
    let r = row(&text, "udp_tx_datagrams");
    assert_eq!(r[1], "1");
    assert_eq!(
        r[2..].join(" "),
        rbypass_stack::counters::describe("udp_tx_datagrams")
    );
    // `counters`: the same figures as bare `name value` lines, as older
    // scripts parse them, and no error for a stack not there (yet).
    let text = stackdump_text(&["counters", "--stack", &f.name]);
    assert!(text.starts_with(&format!("stack {}:", f.name)), "{text}");
    assert_eq!(row(&text, "udp_tx_datagrams"), ["udp_tx_datagrams", "1"]);
    assert_eq!(
        stackdump_text(&["counters", "--stack", "sdtest-not-here"]),
        ""
    );
    // The helper other tests use.
    assert_eq!(counter(&f.name, "udp_tx_datagrams"), 1);
    assert_eq!(counter(&f.name, "tcp_active_opens"), 1);
    assert_eq!(counter(&f.name, "tcp_passive_opens"), 1);
    let j = stackdump_json(&["stats", "--stack", &f.name]);
    let st = find(&j["stacks"], "stack", &f.name.clone().into());
    let cs = st["counters"].as_array().unwrap();
    let names: Vec<&str> = cs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for (n, v) in f.stack.header().counters.iter() {
        assert!(names.contains(&n), "{n} missing from stats --json");
        let c = find(&st["counters"], "name", &n.into());
        assert_eq!(c["value"], v, "{n}");
        assert_eq!(c["description"], rbypass_stack::counters::describe(n));
    }
    assert!(names.contains(&"lock_contended"));
    let rx = find(&st["counters"], "name", &"rx_frames".into());
    assert!(rx["value"].as_u64().unwrap() > 0);
    assert!(!rx["description"].as_str().unwrap().is_empty());
}

#[test]
fn socket_shows_everything_about_one_socket() {
    let f = Fixture::new("socket");
    let id = f.client.index().to_string();
    let j = stackdump_json(&["socket", &id, "--stack", &f.name]);
    assert_eq!(j["stack"], f.name);
    assert_eq!(j["proto"], "tcp");
    assert_eq!(j["handle"], f.client.0);
    let flags: Vec<&str> = j["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        flags.contains(&"BOUND") && flags.contains(&"CONNECTED"),
        "{flags:?}"
    );
    assert_eq!(j["remote"], format!("127.0.0.1:{TCP_PORT}"));
    let t = &j["tcp"];
    assert_eq!(t["state"], "ESTAB");
    assert_eq!(t["send_queue"]["bytes"], 6);
    assert_eq!(t["send_queue"]["bufs"], 1);
    assert_eq!(t["in_flight"], 6);
    assert_eq!(t["cc"], "cubic");
    assert!(
        j["timers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "tcp-rto"),
        "{j:#}"
    );
    let tx = find(&j["counters"], "name", &"tx_bytes".into());
    assert_eq!(tx["value"], 11);
    assert!(!tx["description"].as_str().unwrap().is_empty());

    // STACK:ID, the table, a listener, a UDP socket.
    let text = stackdump_text(&["socket", &format!("{}:{id}", f.name)]);
    assert_eq!(row(&text, "state")[1], "ESTAB", "{text}");
    assert!(text.contains("tx_bytes"), "{text}");
    let l = stackdump_json(&[
        "socket",
        &f.listener.index().to_string(),
        "--stack",
        &f.name,
    ]);
    assert_eq!(l["tcp"]["state"], "LISTEN");
    assert_eq!(l["tcp"]["backlog"], 8);
    let u = stackdump_json(&["socket", &f.udp.index().to_string(), "--stack", &f.name]);
    assert_eq!(u["proto"], "udp");
    assert_eq!(u["rx_queue"]["bufs"], 1);
    assert_eq!(u["tcp"], Value::Null);

    // An unknown socket: exit 1, one line.
    let out = stackdump(&["socket", "31", "--stack", &f.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no socket 31"), "{err}");
}

#[test]
fn packets_shows_pool_queues_and_buffers_per_socket() {
    let f = Fixture::new("packets");
    let j = stackdump_json(&["packets", "--stack", &f.name]);
    let p = find(&j["stacks"], "stack", &f.name.clone().into());
    assert_eq!(p["total"], 256);
    let (free, used) = (p["free"].as_u64().unwrap(), p["in_use"].as_u64().unwrap());
    assert_eq!(free + used, 256);
    assert_eq!(p["loop_queue"], 1, "the undelivered segment");
    assert_eq!(p["tx_queue"], 0);
    let u = find(&p["sockets"], "id", &f.udp.index().into());
    assert_eq!(u["rx_queue"], 1);
    let s = find(&p["sockets"], "id", &f.server.index().into());
    assert_eq!(s["tcp_recv_queue"], 1);
    let c = find(&p["sockets"], "id", &f.client.index().into());
    assert_eq!(c["tcp_send_queue"], 1);
    assert_eq!(c["state"], "ESTAB");
    assert!(p["held_by_sockets"].as_u64().unwrap() >= 3);
    assert!(used >= 3, "{p:#}");

    let text = stackdump_text(&["packets", "--stack", &f.name]);
    assert!(
        text.contains(&format!("buffers total 256 free {free} in use {used}"))
            && text.contains("loop queue 1"),
        "{text}"
    );
    let r = row(&text, &f.client.index().to_string());
    // SOCKET PROTO STATE RX-Q TCP-RCV TCP-OOO TCP-SND TOTAL
    assert_eq!(
        &r[1..],
        &["tcp", "ESTAB", "0", "0", "0", "1", "1"],
        "{text}"
    );
}

#[test]
fn filters_are_the_bound_flows() {
    let f = Fixture::new("filters");
    let j = stackdump_json(&["filters", "--stack", &f.name]);
    let rows = j["filters"].as_array().unwrap();
    let has = |proto: &str, addr: &str, port: u16| {
        rows.iter()
            .find(|r| r["proto"] == proto && r["addr"] == addr && r["port"] == port)
            .unwrap_or_else(|| panic!("no flow {proto} {addr} {port}: {j:#}"))
    };
    let u = has("udp", "*", UDP_PORT);
    assert_eq!(u["sockets"], serde_json::json!([f.udp.index()]));
    let t = has("tcp", "127.0.0.1", TCP_PORT);
    let socks = t["sockets"].as_array().unwrap();
    assert!(socks.contains(&f.listener.index().into()) && socks.contains(&f.server.index().into()));
    // The sender's and the client's ephemeral ports: five sockets, four flows.
    assert_eq!(rows.len(), 4, "{j:#}");
    let text = stackdump_text(&["filters", "--stack", &f.name]);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    f.name.as_str(),
                    "udp",
                    "*",
                    "5301",
                    &f.udp.index().to_string()
                ]),
        "{text}"
    );
    let _ = f.udp_sender;
}

#[test]
fn config_shows_capacities_and_interface() {
    let f = Fixture::new("config");
    let j = stackdump_json(&["config", "--stack", &f.name]);
    let c = find(&j["stacks"], "stack", &f.name.clone().into());
    assert_eq!(c["config"]["max_sockets"], 32);
    assert_eq!(c["config"]["max_bufs"], 256);
    assert_eq!(c["config"]["tcp_cc"], "cubic");
    assert_eq!(c["config"]["timer_tick_us"], 1000);
    assert_eq!(c["iface"]["ip"], "127.0.0.1");
    assert_eq!(c["iface"]["prefix_len"], 8);
    assert_eq!(c["iface"]["mtu"], 1500);
    assert_eq!(c["iface"]["mac"], "02:00:00:00:00:01");
    assert_eq!(c["iface"]["gateway"], Value::Null);
    assert_eq!(c["nic"], "loop");
    let text = stackdump_text(&["config", "--stack", &f.name]);
    assert_eq!(row(&text, "max_bufs")[1], "256", "{text}");
    assert_eq!(row(&text, "address")[1], "127.0.0.1/8", "{text}");
    assert_eq!(row(&text, "mtu")[1], "1500", "{text}");
    assert_eq!(row(&text, "gateway")[1], "-", "{text}");
}

#[test]
fn timers_show_the_pending_retransmit() {
    let f = Fixture::new("timers");
    let j = stackdump_json(&["timers", "--stack", &f.name]);
    let t = find(&j["stacks"], "stack", &f.name.clone().into());
    let rto = t["timers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "tcp-rto" && t["socket"] == f.client.index())
        .unwrap_or_else(|| panic!("no RTO timer for the client: {j:#}"));
    let due = rto["due_ms"].as_f64().unwrap();
    assert!(due > 0.0 && due <= 1000.0, "RTO due in {due} ms");
    assert!(t["armed"].as_u64().unwrap() >= 1);
    let text = stackdump_text(&["timers", "--stack", &f.name]);
    assert!(
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 4 && w[1] == "tcp-rto" && w[2] == f.client.index().to_string()
        }),
        "{text}"
    );
    let _ = f.now;
}

#[test]
fn lots_has_every_section_of_one_stack() {
    let f = Fixture::new("lots");
    let j = stackdump_json(&["lots", &f.name]);
    assert_eq!(j["stack"]["name"], f.name);
    assert_eq!(j["stack"]["sockets"], 5);
    assert_eq!(j["config"]["config"]["max_bufs"], 256);
    assert_eq!(j["sockets"].as_array().unwrap().len(), 5);
    assert_eq!(j["packets"]["loop_queue"], 1);
    assert_eq!(j["filters"].as_array().unwrap().len(), 4);
    assert!(!j["timers"]["timers"].as_array().unwrap().is_empty());
    assert!(!j["stats"]["counters"].as_array().unwrap().is_empty());
    let me = std::process::id();
    let p = find(&j["processes"], "pid", &me.into());
    assert_eq!(p["alive"], true);
    assert!(j["busy"].as_array().unwrap().is_empty());
    let text = stackdump_text(&["lots", "--stack", &f.name]);
    for section in [
        "stack",
        "config",
        "processes",
        "netstat",
        "stats",
        "packets",
        "timers",
        "filters",
    ] {
        assert!(text.contains(&format!("== {section} ==")), "{text}");
    }
    assert!(
        text.contains("ESTAB") && text.contains("max_sockets"),
        "{text}"
    );
}

#[test]
fn processes_lists_registered_pids_and_their_stacks() {
    let f = Fixture::new("procs");
    let me = std::process::id();
    let j = stackdump_json(&["processes", "--stack", &f.name]);
    let p = find(&j["processes"], "pid", &me.into());
    assert_eq!(p["alive"], true);
    assert!(!p["command"].as_str().unwrap().is_empty());
    assert_eq!(p["stacks"][0]["stack"], f.name);
    let text = stackdump_text(&["processes", "--stack", &f.name]);
    let r = row(&text, &me.to_string());
    // PID COMMAND THREADS ATTACHED ALIVE STACKS
    assert_eq!(r[4], "yes", "{text}");
    assert_eq!(r[5], f.name, "{text}");
    // Unfiltered, the pid lists every stack it registered in (at least this one).
    let all = stackdump_json(&["processes"]);
    let p = find(&all["processes"], "pid", &me.into());
    assert!(p["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["stack"] == f.name));
}

#[test]
fn an_unknown_stack_is_one_line_and_exit_1() {
    for sub in [
        "netstat",
        "stats",
        "stacks",
        "timers",
        "packets",
        "filters",
        "config",
        "lots",
        "processes",
    ] {
        let out = stackdump(&[sub, "--stack", "sdtest-surely-not-here"]);
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            "rbypass: no stack sdtest-surely-not-here",
            "{sub}"
        );
    }
    let out = stackdump(&["kill", "sdtest-surely-not-here"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_stack_held_mid_update_reads_busy_not_torn() {
    let f = Fixture::new("busy");
    // A writer stopped half way through publishing (killed, say).
    f.stack
        .header()
        .pub_gen
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let t0 = Instant::now();
    let text = stackdump_text(&["stacks", "--stack", &f.name]);
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded retries");
    assert!(
        text.contains(&format!("{}: published state: busy, retry", f.name)),
        "{text}"
    );
    let j = stackdump_json(&["stacks", "--stack", &f.name]);
    assert_eq!(j["stacks"][0]["sockets"], Value::Null);
    assert_eq!(j["stacks"][0]["busy"][0], "published state");
    f.stack
        .header()
        .pub_gen
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let j = stackdump_json(&["stacks", "--stack", &f.name]);
    assert_eq!(j["stacks"][0]["sockets"], 5);
}

#[test]
fn watch_prints_counter_rates() {
    let f = Fixture::new("watch");
    let lo = Ipv4Addr::LOCALHOST;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (text, j) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut now = f.now;
            let mut buf = [0u8; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                {
                    let mut c = f.stack.lock();
                    for _ in 0..10 {
                        let _ =
                            c.udp_send_to(f.udp_sender, b"tick", SocketAddrV4::new(lo, UDP_PORT));
                        now += 10_000;
                        c.poll(now);
                        while c.udp_recv_from(f.udp, &mut buf, false).is_ok() {}
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let text = stackdump_text(&[
            "watch",
            "--count",
            "2",
            "--interval",
            "100",
            "--stack",
            &f.name,
        ]);
        let j = stackdump_json(&[
            "watch",
            "--count",
            "2",
            "--interval",
            "100",
            "--stack",
            &f.name,
        ]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (text, j)
    });
    assert!(
        text.contains("refresh 1") && text.contains("refresh 2"),
        "{text}"
    );
    assert!(text.contains("RATE/S"), "{text}");
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("udp_tx_datagrams"))
        .map(|l| l.split_whitespace().nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 2, "{text}");
    assert!(rates.iter().all(|&r| r > 0.0), "{text}");
    let samples = j["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert_eq!(s["stack"], f.name);
        let c = find(&s["counters"], "name", &"rx_frames".into());
        assert!(c["per_sec"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(c["delta"].as_u64().unwrap() > 0);
    }
}

/// Helper role: creates the named stack, says so, and waits to be killed.
#[test]
fn helper_create_and_wait() {
    let Ok(name) = std::env::var(ROLE) else {
        return;
    };
    let cfg = StackConfig {
        max_sockets: 8,
        max_bufs: 64,
        ..StackConfig::default()
    };
    let mut s = Stack::create_named(&name, &cfg, IfaceConfig::loopback()).unwrap();
    s.set_remove_on_drop(false);
    s.header().procs.register_self().unwrap();
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(60));
}

/// A stack whose creator was SIGKILLed (it left its arena and its process
/// table entry behind). Returns the dead pid.
fn stale_stack(name: &str) -> u32 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_create_and_wait",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("ready") {
        let mut b = [0u8; 256];
        let n = std::io::Read::read(&mut out, &mut b).unwrap();
        assert!(n > 0 && Instant::now() < deadline, "helper failed: {seen}");
        seen += &String::from_utf8_lossy(&b[..n]);
    }
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    pid
}

#[test]
fn gc_removes_stacks_whose_processes_are_gone_and_keeps_live_ones() {
    let _admin = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let live = Fixture::new("gclive");
    let dead = name("gcdead");
    let dead_path = PathBuf::from(format!("/dev/shm/rbypass-{dead}"));
    let _c1 = Cleanup(dead_path.clone());
    let pid = stale_stack(&dead);
    assert!(dead_path.exists());
    // A temporary file of a creation the dead helper never finished.
    let tmp = PathBuf::from(format!("/dev/shm/.rbypass-{dead}x.tmp{pid}"));
    std::fs::write(&tmp, b"partial").unwrap();
    let _c2 = Cleanup(tmp.clone());

    let j = stackdump_json(&["gc", "--dry-run"]);
    let e = find(&j["entries"], "name", &dead.clone().into());
    assert_eq!(e["action"], "would remove", "{j:#}");
    assert!(
        dead_path.exists() && tmp.exists(),
        "a dry run removes nothing"
    );
    let l = find(&j["entries"], "name", &live.name.clone().into());
    assert_eq!(l["action"], "kept");
    assert!(l["reason"]
        .as_str()
        .unwrap()
        .contains(&std::process::id().to_string()));

    let text = stackdump_text(&["gc"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("removed") && l.contains(&dead_path.display().to_string())),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("removed") && l.contains(&format!("tmp{pid}"))),
        "{text}"
    );
    assert!(!dead_path.exists() && !tmp.exists());
    assert!(live.stack.arena().path().exists(), "the live stack is kept");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kept") && l.contains(&live.name)),
        "{text}"
    );
}

#[test]
fn kill_refuses_a_live_stack_and_removes_a_dead_one() {
    let _admin = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let live = Fixture::new("killlive");
    let out = stackdump(&["kill", &live.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&std::process::id().to_string()), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(live.stack.arena().path().exists());

    let dead = name("killdead");
    let dead_path = PathBuf::from(format!("/dev/shm/rbypass-{dead}"));
    let _c = Cleanup(dead_path.clone());
    stale_stack(&dead);
    let j = stackdump_json(&["kill", &dead]);
    assert_eq!(j["removed"], true);
    assert!(!dead_path.exists());
    let out = stackdump(&["kill", &dead]);
    assert_eq!(out.status.code(), Some(1), "already gone");
}

#[test]
fn an_arena_of_another_user_is_reported_not_visible() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (to run stackdump as nobody)");
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("skipped: no setpriv");
        return;
    };
    let hidden = Fixture::new("hidden");
    let shown = Fixture::new("shown");
    std::fs::set_permissions(
        hidden.stack.arena().path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    std::os::unix::fs::chown(shown.stack.arena().path(), Some(65534), Some(65534)).unwrap();
    // A copy of the binary that nobody may run, whatever the checkout's permissions.
    let dir = PathBuf::from(format!("/tmp/sdtest-{}-bin", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let bin = dir.join("rbypass");
    std::fs::copy(rbypass(), &bin).unwrap();
    for (p, m) in [(&dir, 0o755), (&bin, 0o755)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    }
    let run = |args: &[&str]| {
        Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("stackdump")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l
            == format!(
                "{}: owned by uid 0; not visible to you (run as that user or root)",
                hidden.name
            )),
        "{text}"
    );
    assert_eq!(
        row(&text, &shown.name)[3],
        "5",
        "the other stack is still shown:\n{text}"
    );
    let out = run(&["--json"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let u = find(&j["unreadable"], "name", &hidden.name.clone().into());
    assert_eq!(u["owner_uid"], 0);
    assert_eq!(u["not_visible"], true);
    find(&j["stacks"], "name", &shown.name.clone().into());
    // Every other subcommand copes too.
    for sub in [
        "netstat",
        "stats",
        "timers",
        "packets",
        "filters",
        "config",
        "processes",
    ] {
        let out = run(&[sub]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub}: {text}");
        assert!(
            text.contains(&format!("{}: owned by uid 0", hidden.name)),
            "{sub}: {text}"
        );
    }
    let out = run(&["lots", &hidden.name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not visible to you"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(prog: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(prog))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
