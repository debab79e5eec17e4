//! `rbypass run --nic tap:NAME`: an unmodified python3 client, its sockets
//! on a stack that drives a TAP device, against a kernel server on the TAP's
//! other end, all inside a namespace the test creates (and always removes;
//! addresses 198.18.7.0/24). The client writes 3 MB and leaves with
//! `os._exit` at once: the linger process the library forks at exit must
//! still deliver every byte and the FIN, as the kernel would. Needs root;
//! without it the test prints "skipped" and passes.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, NetNs};

const SINK: &str = r#"
import socket, hashlib, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
# A small window and a late first read: most of the data is still queued in
# the stack when the client exits, so only the linger process can send it.
l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(4)
print("listening", flush=True)
c, _ = l.accept()
time.sleep(0.5)
h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"#;

const BURST: &str = r#"
import socket, hashlib, sys, os
data = bytes((i * 7 + i // 1000) % 256 for i in range(int(sys.argv[3])))
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(data)
os._exit(0)  # no close, no flush: the exit itself must deliver the rest
"#;

/// Kills the child if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exit_with_unsent_data_still_delivers_through_a_tap() {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and ip netns");
        return;
    }
    let rbypass = PathBuf::from(env!("CARGO_BIN_EXE_rbypass"));
    assert!(
        rbypass.with_file_name("librbypass.so").exists(),
        "run cargo build --release first"
    );
    let ns = NetNs::create("pt").expect("namespace");
    ns.disable_ipv6().expect("disable IPv6");
    let tap = ns.name().to_string();
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["tuntap", "add", "dev", &tap, "mode", "tap"],
        vec!["addr", "add", "198.18.7.1/24", "dev", &tap],
        vec!["link", "set", &tap, "up"],
    ] {
        ns.ip(&args).expect("configure the namespace");
    }
    let dir = std::env::temp_dir().join(format!("rbypass-tap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("sink.py");
    let burst = dir.join("burst.py");
    std::fs::write(&sink, SINK).unwrap();
    std::fs::write(&burst, BURST).unwrap();
    let stack = format!("taptest{}", std::process::id());

    let mut server = Guard(
        ns.spawn(&["python3", sink.to_str().unwrap(), "198.18.7.1", "21700"])
            .expect("server"),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");

    // The stack is kept after the client exits, for its counters below.
    let client = ns
        .exec(&[
            "env",
            "RBYPASS_KEEP_STACK=1",
            rbypass.to_str().unwrap(),
            "run",
            "--name",
            &stack,
            "--nic",
            &format!("tap:{tap}"),
            "--ip",
            "198.18.7.2/24",
            "--",
            "python3",
            burst.to_str().unwrap(),
            "198.18.7.1",
            "21700",
            "3000000",
        ])
        .expect("client");
    assert!(
        client.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let sent = String::from_utf8_lossy(&client.stdout).trim().to_owned();

    // The server sees EOF once the linger process has delivered everything.
    let start = Instant::now();
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the kernel server never saw the end of the stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut got = String::new();
    out.read_to_string(&mut got).unwrap();
    assert_eq!(got.trim(), sent, "bytes and SHA-256 at the kernel end");

    let counters = ns
        .exec(&[
            rbypass.to_str().unwrap(),
            "stackdump",
            "counters",
            "--stack",
            &stack,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&counters.stdout);
    let tx: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tx_frames"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(tx >= 2000, "the stack sent {tx} frames on the TAP:\n{text}");
    let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{stack}"));
    let _ = std::fs::remove_dir_all(&dir);
}
