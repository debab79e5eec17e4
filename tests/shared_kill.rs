//! Crash safety of a shared stack: member processes are killed with SIGKILL
//! at random moments (in send, in receive, holding the stack lock) while a
//! server and a client of the same stack keep exchanging data over TCP.
//! The survivors must lose no byte and never wedge; the dead members'
//! sockets are closed for them and their buffers come back.
//!
//! Needs python3; runs on the in-arena loopback (no privileges).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{tool_available, KillOnDrop};
use support::stackdump::rbypass;

const SERVER: &str = r#"
import socket, socketserver, sys, threading
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while True:
                d = self.request.recv(65536)
                if not d:
                    return
                self.request.sendall(d)
        except OSError:
            return
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
srv = Server(('127.0.0.1', int(sys.argv[1])), Echo)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('127.0.0.1', int(sys.argv[2])))
def sink():
    while True:
        u.recvfrom(2048)
threading.Thread(target=sink, daemon=True).start()
print('ready', flush=True)
srv.serve_forever()
"#;

const CLIENT: &str = r#"
import os, socket, sys, time
port, stop = int(sys.argv[1]), sys.argv[2]
conns = [socket.create_connection(('127.0.0.1', port)) for _ in range(4)]
for c in conns:
    c.settimeout(20)
print('ready', flush=True)
rounds = 0
while not os.path.exists(stop):
    for k, c in enumerate(conns):
        msg = bytes((rounds * 7 + k + i) % 251 for i in range(16384))
        c.sendall(msg)
        got = b''
        while len(got) < len(msg):
            d = c.recv(65536)
            if not d:
                print('eof after', len(got), flush=True)
                sys.exit(1)
            got += d
        if got != msg:
            print('corrupt in round', rounds, flush=True)
            sys.exit(1)
    rounds += 1
for c in conns:
    c.close()
print('ok', rounds, flush=True)
"#;

const VICTIM: &str = r#"
import socket, sys
port, uport = int(sys.argv[1]), int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print('up', flush=True)
while True:
    s = socket.create_connection(('127.0.0.1', port))
    for i in range(20):
        s.sendall(b'v' * 3000)
        s.recv(65536)
        u.sendto(b'w' * 200, ('127.0.0.1', uport))
    s.close()
"#;

/// Kills (RBYPASS_TEST_KILLS overrides, to look at a failure quickly).
fn kills() -> usize {
    std::env::var("RBYPASS_TEST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Removes the stack's arena and the scripts when the test ends.
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn member(
    stack: &str,
    script: &std::path::Path,
    args: &[&str],
) -> (KillOnDrop, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(rbypass())
        .args(["run", "--name", stack, "--", "python3"])
        .arg(script)
        .args(args)
        .env_remove("RBYPASS_NIC")
        .env("RBYPASS_KEEP_STACK", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a member");
    let out = BufReader::new(child.stdout.take().unwrap());
    (KillOnDrop::new(child), out)
}

fn read_line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    line.trim().to_string()
}

/// A small xorshift generator: the kill moments vary but a seed reproduces them.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn bufs_in_use(stack: &str) -> u32 {
    let a = rbypass_stack::arena::Arena::open_readonly(&rbypass_stack::arena::path_for_name(stack))
        .expect("the stack");
    a.snapshot().bufs_in_use
}

#[test]
fn members_killed_at_random_moments_leave_the_others_working() {
    if !tool_available("python3") {
        eprintln!("skipped: needs python3");
        return;
    }
    let pid = std::process::id();
    let stack = format!("kill{pid}");
    // A wedged stack would block a read below for ever: fail instead.
    let watched = stack.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(240));
        let o = support::stackdump::stackdump(&["lots", &watched]);
        eprintln!(
            "no verdict after 240 s (a wedged stack?):\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("rbypass-kill-.*-{pid}")])
            .status();
        std::process::exit(1);
    });
    let dir = std::env::temp_dir();
    let (server_py, client_py, victim_py) = (
        dir.join(format!("rbypass-kill-server-{pid}.py")),
        dir.join(format!("rbypass-kill-client-{pid}.py")),
        dir.join(format!("rbypass-kill-victim-{pid}.py")),
    );
    let stop = dir.join(format!("rbypass-kill-stop-{pid}"));
    let _cleanup = Cleanup(vec![
        server_py.clone(),
        client_py.clone(),
        victim_py.clone(),
        stop.clone(),
        rbypass_stack::arena::path_for_name(&stack),
    ]);
    std::fs::write(&server_py, SERVER).unwrap();
    std::fs::write(&client_py, CLIENT).unwrap();
    std::fs::write(&victim_py, VICTIM).unwrap();
    let (port, uport) = ("21240", "21241");

    let (_server, mut sout) = member(&stack, &server_py, &[port, uport]);
    assert_eq!(read_line(&mut sout), "ready");
    let baseline = bufs_in_use(&stack);
    let (mut client, mut cout) = member(&stack, &client_py, &[port, stop.to_str().unwrap()]);
    assert_eq!(read_line(&mut cout), "ready");

    let seed = u64::from(pid) | 1;
    eprintln!("kill moments from seed {seed}");
    let mut rng = Rng(seed);
    let start = Instant::now();
    for k in 0..kills() {
        let (mut v, mut vout) = member(&stack, &victim_py, &[port, uport]);
        assert_eq!(read_line(&mut vout), "up", "victim {k} did not start");
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        v.child().kill().unwrap();
        let _ = v.child().wait();
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the kills took too long (a wedged stack?) after {k}"
        );
    }
    // The client goes on, finishes its rounds and checks every byte.
    std::fs::write(&stop, b"").unwrap();
    let verdict = read_line(&mut cout);
    assert!(verdict.starts_with("ok "), "the client: {verdict}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.child().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client does not exit");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Dead members are reaped, their sockets closed and buffers returned.
    let path = rbypass_stack::arena::path_for_name(&stack);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = rbypass_stack::arena::Arena::open_readonly(&path).unwrap();
        let live = a.header().procs.snapshot().len();
        let bufs = a.snapshot().bufs_in_use;
        if live == 1 && bufs == baseline {
            break;
        }
        if Instant::now() > deadline {
            let show = |what: &str| {
                let o = support::stackdump::stackdump(&[what, "--stack", &stack]);
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            panic!(
                "after the kills: {live} process entries (1 expected: the server), {bufs} buffers in use ({baseline} at the start)\n{}\n{}\n{}",
                show("packets"),
                show("netstat"),
                show("stats")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server still answers.
    std::fs::remove_file(&stop).unwrap();
    let (mut last, mut lout) = member(&stack, &client_py, &[port, stop.to_str().unwrap()]);
    assert_eq!(read_line(&mut lout), "ready");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, b"").unwrap();
    let verdict = read_line(&mut lout);
    assert!(
        verdict.starts_with("ok ") && verdict != "ok 0",
        "a new client after the kills: {verdict}"
    );
    let _ = last.child().wait();
}
