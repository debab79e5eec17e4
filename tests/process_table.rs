//! The stack's process table: a process enters it when it attaches, a fork
//! child enters as a new member, threads are counted while they use the
//! stack, and a process leaves it when it exits.
//!
//! Needs python3; runs on the in-arena loopback (no privileges).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use support::netns::tool_available;
use support::stackdump::rbypass;

const APP: &str = r#"
import os, socket, sys, threading
go = threading.Event()
def worker():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    go.wait()
main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ts = [threading.Thread(target=worker) for _ in range(3)]
for t in ts:
    t.start()
print('threads', flush=True)
sys.stdin.readline()
go.set()
for t in ts:
    t.join()
print('joined', flush=True)
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print('child', os.getpid(), flush=True)
    sys.stdin.readline()
    os._exit(0)
os.waitpid(pid, 0)
print('done', flush=True)
"#;

struct ArenaFile(String);

impl Drop for ArenaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

fn members(stack: &str) -> Vec<rbypass_stack::procs::ProcInfo> {
    let a = rbypass_stack::arena::Arena::open_readonly(&rbypass_stack::arena::path_for_name(stack))
        .expect("the stack");
    a.header().procs.snapshot()
}

#[test]
fn attach_threads_fork_and_exit_show_in_the_process_table() {
    if !tool_available("python3") {
        eprintln!("skipped: needs python3");
        return;
    }
    let stack = format!("ptable{}", std::process::id());
    let _f = ArenaFile(stack.clone());
    let mut child = Command::new(rbypass())
        .args(["run", "--name", &stack, "--", "python3", "-c", APP])
        .env("RBYPASS_KEEP_STACK", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the app");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut next = |out: &mut BufReader<_>| {
        line.clear();
        out.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let app = child.id();

    assert_eq!(next(&mut out), "threads");
    let m = members(&stack);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!((m[0].pid, m[0].alive), (app, true));
    assert_eq!(m[0].comm, "python3");
    assert_eq!(m[0].threads, 4, "the main thread and three workers: {m:?}");

    stdin.write_all(b"\n").unwrap();
    assert_eq!(next(&mut out), "joined");
    assert_eq!(members(&stack)[0].threads, 1, "the workers exited");

    stdin.write_all(b"\n").unwrap();
    let c = next(&mut out);
    let kid: u32 = c.strip_prefix("child ").unwrap().parse().unwrap();
    let m = members(&stack);
    let pids: Vec<u32> = m.iter().map(|p| p.pid).collect();
    assert!(pids.contains(&app) && pids.contains(&kid), "{m:?}");
    let k = m.iter().find(|p| p.pid == kid).unwrap();
    assert_eq!(k.threads, 1, "the child's one thread: {m:?}");

    stdin.write_all(b"\n").unwrap();
    assert_eq!(next(&mut out), "done");
    assert!(child.wait().unwrap().success());
    assert!(members(&stack).is_empty(), "both left the table at exit");
}
