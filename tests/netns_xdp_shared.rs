//! One named stack on an AF_XDP device, used by unrelated processes: the
//! first opens the device, later ones take its AF_XDP sockets, maps and
//! program link (pidfd_getfd) and drive the same rings. The device outlives
//! the process that opened it (here killed with SIGKILL): the others keep
//! serving, a process started after it still joins, and when the last one
//! exits the stack's arena goes with it.
//!
//! Needs root and python3; without them the test prints "skipped" and passes.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, tool_available, KillOnDrop};
use support::stackdump::{counter, rbypass};
use support::veth::{in_netns, TwoHosts};

const ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    d, a = s.recvfrom(2048)
    if d == b'quit':
        break
    s.sendto(d, a)
"#;

/// Removes the stack's arena file when the test ends, whatever happened.
struct ArenaFile(String);

impl Drop for ArenaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

/// Starts the echo server on `port` under `rbypass run` in namespace B and
/// waits until it has bound (its socket is then on the stack's device).
fn start_echo(hosts: &TwoHosts, stack: &str, script: &str, port: u16) -> KillOnDrop {
    let mut child: Child = Command::new("ip")
        .args(["netns", "exec", hosts.b.name()])
        .arg(rbypass())
        .args([
            "run",
            "--nic",
            &format!("xdp:{}", hosts.if_b),
            "--name",
            stack,
            "--",
            "python3",
            script,
            &hosts.ip_b.to_string(),
            &port.to_string(),
        ])
        .env("RBYPASS_NO_FAIL", "0")
        .env_remove("RBYPASS_KEEP_STACK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start an echo server");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out).read_line(&mut line).expect("read");
    if line.trim() != "ready" {
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        panic!(
            "echo server on port {port} did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    KillOnDrop::new(child)
}

/// Sends `n` datagrams to `to` from namespace A and checks every echo.
fn echo_round(hosts: &TwoHosts, to: SocketAddrV4, n: usize, tag: u8) {
    in_netns(hosts.a.name(), move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let msg: Vec<u8> = (0..64 + i % 200).map(|k| (k + i) as u8 ^ tag).collect();
            let mut ok = false;
            // A lost datagram (there is no loss on veth, but be fair) is resent.
            for _ in 0..10 {
                s.send_to(&msg, to).unwrap();
                match s.recv_from(&mut buf) {
                    Ok((len, from)) if from == std::net::SocketAddr::V4(to) => {
                        assert_eq!(&buf[..len], &msg[..], "echo {i} from {to}");
                        ok = true;
                        break;
                    }
                    _ => continue,
                }
            }
            assert!(ok, "no echo of datagram {i} from {to}");
        }
    })
    .unwrap();
}

fn quit(hosts: &TwoHosts, to: SocketAddrV4) {
    in_netns(hosts.a.name(), move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.send_to(b"quit", to).unwrap();
    })
    .unwrap();
}

fn members(stack: &str) -> Vec<rbypass_stack::procs::ProcInfo> {
    let path = rbypass_stack::arena::path_for_name(stack);
    match rbypass_stack::arena::Arena::open_readonly(&path) {
        Ok(a) => a.header().procs.snapshot(),
        Err(_) => Vec::new(),
    }
}

fn wait_exit(p: &mut KillOnDrop, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.child().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unrelated_processes_share_one_xdp_stack() {
    if !have_root_and_netns() || !tool_available("python3") {
        eprintln!("skipped: needs root, network namespaces and python3");
        return;
    }
    let hosts = TwoHosts::create("sh", 85, 2).expect("namespaces");
    let stack = format!("xshared{}", std::process::id());
    let _arena = ArenaFile(stack.clone());
    let script = std::env::temp_dir().join(format!("rbypass-shared-{stack}.py"));
    std::fs::write(&script, ECHO).unwrap();
    let script_s = script.to_str().unwrap().to_string();
    let port = |p: u16| SocketAddrV4::new(hosts.ip_b, p);

    let mut first = start_echo(&hosts, &stack, &script_s, 21190);
    let mut second = start_echo(&hosts, &stack, &script_s, 21191);
    let m = members(&stack);
    let pids: Vec<u32> = m.iter().filter(|p| p.alive).map(|p| p.pid).collect();
    assert!(pids.len() >= 2, "two live members expected: {m:?}");
    assert!(
        m.iter().filter(|p| !p.nic_fds.is_empty()).count() >= 2,
        "both publish the device's fds: {m:?}"
    );
    let before = counter(&stack, "rx_frames");
    echo_round(&hosts, port(21190), 300, 1);
    echo_round(&hosts, port(21191), 300, 2);
    assert!(
        counter(&stack, "rx_frames") - before >= 600,
        "the echoes did not go through the stack"
    );

    // The process that opened the device dies without a word: the
    // device (sockets, program link) lives on in the other member.
    first.child().kill().unwrap();
    wait_exit(&mut first, "the first server");
    echo_round(&hosts, port(21191), 300, 3);

    // A process started now joins through the survivor.
    let mut third = start_echo(&hosts, &stack, &script_s, 21192);
    echo_round(&hosts, port(21192), 300, 4);
    echo_round(&hosts, port(21191), 100, 5);
    let live: Vec<u32> = members(&stack)
        .iter()
        .filter(|p| p.alive)
        .map(|p| p.pid)
        .collect();
    assert_eq!(live.len(), 2, "second and third are the members: {live:?}");

    // Both leave normally: the last one removes the stack.
    quit(&hosts, port(21191));
    wait_exit(&mut second, "the second server");
    echo_round(&hosts, port(21192), 100, 6);
    quit(&hosts, port(21192));
    wait_exit(&mut third, "the third server");
    let path = rbypass_stack::arena::path_for_name(&stack);
    assert!(
        !path.exists(),
        "the last process of the stack removed its arena"
    );
    let _ = std::fs::remove_file(&script);
}
