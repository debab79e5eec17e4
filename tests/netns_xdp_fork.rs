//! A forking server under `rbypass run` on a real interface: the parent
//! accepts and each connection is served by a fork child, so parent and
//! children drive the same AF_XDP (or AF_PACKET) rings in turn. Every
//! process has its own copy of the device's memory; the positions in the
//! rings must come from what they share, or a process re-reads frames
//! another one already took. Kernel clients in namespace A check every echo
//! byte for byte, over `xdp:` and `packet:`.
//!
//! Needs root and python3; without root the tests print "skipped" and pass.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, KillOnDrop};
use support::stackdump::{counter, rbypass};
use support::veth::{in_netns, TwoHosts};

const SERVER: &str = r#"
import socketserver, sys
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                return
            self.request.sendall(d)
class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
Server((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
"#;

const CONNECTIONS: usize = 8;
const BYTES: usize = 2 << 20;

/// Removes the stack's arena file when the test ends.
struct ArenaFile(String);

impl Drop for ArenaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

fn echo_client(to: SocketAddrV4, seed: usize) {
    let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data: Vec<u8> = (0..BYTES)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed as u8)
        .collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(BYTES);
    (&s).read_to_end(&mut got).expect("read the echo");
    writer.join().expect("writer");
    assert_eq!(got.len(), BYTES, "connection {seed}: echoed length");
    assert!(got == data, "connection {seed}: echoed bytes differ");
}

fn run_case(tag: &str, subnet: u8, nic: &str, port: u16) {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let hosts = TwoHosts::create(tag, subnet, 1).expect("namespaces");
    if nic == "packet" {
        // A packet ring holds one MTU frame: the sender must segment.
        let off = hosts
            .a
            .exec(&["ethtool", "-K", &hosts.if_a, "tso", "off", "gso", "off"])
            .unwrap();
        assert!(off.status.success(), "ethtool: {off:?}");
    }
    let stack = format!("xfork{tag}{}", std::process::id());
    let _arena = ArenaFile(stack.clone());
    let script = std::env::temp_dir().join(format!("rbypass-fork-{stack}.py"));
    std::fs::write(&script, SERVER).unwrap();
    let server = Command::new("ip")
        .args(["netns", "exec", hosts.b.name()])
        .arg(rbypass())
        .args([
            "run",
            "--nic",
            &format!("{nic}:{}", hosts.if_b),
            "--name",
            &stack,
        ])
        .args(["--", "python3"])
        .arg(&script)
        .args([&hosts.ip_b.to_string(), &port.to_string()])
        .env("RBYPASS_NO_FAIL", "0")
        .env("RBYPASS_KEEP_STACK", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let server = KillOnDrop::new(server);
    let to = SocketAddrV4::new(hosts.ip_b, port);
    // Wait until the server listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = in_netns(hosts.a.name(), move || {
            TcpStream::connect_timeout(&to.into(), Duration::from_millis(300)).is_ok()
        })
        .unwrap();
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "the server never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = counter(&stack, "rx_frames");
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let ns = hosts.a.name().to_string();
            std::thread::spawn(move || in_netns(&ns, move || echo_client(to, i)).unwrap())
        })
        .collect();
    for c in clients {
        c.join().expect("echo client");
    }
    let carried = counter(&stack, "rx_frames") - before;
    let out = server.finish().unwrap();
    let _ = std::fs::remove_file(&script);
    assert!(
        carried >= (CONNECTIONS * BYTES / 1448) as u64,
        "only {carried} frames went through the stack; server log:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn forking_server_over_xdp() {
    run_case("fx", 74, "xdp", 21160);
}

#[test]
fn forking_server_over_packet() {
    run_case("fp", 75, "packet", 21161);
}
