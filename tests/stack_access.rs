//! Who may attach to a named stack: its arena is 0600 and its creator's;
//! another user is refused in one line (and the app runs on the kernel, or
//! exits with RBYPASS_NO_FAIL=0) unless the creator shared the stack with
//! RBYPASS_SHARE_WITH, in which case that user's process joins it.
//!
//! Needs root (to run as nobody) and python3; otherwise prints "skipped".

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{tool_available, KillOnDrop};
use support::stackdump::rbypass;

const NOBODY: u32 = 65534;

/// Removes the stacks' arena files when the test ends.
struct ArenaFiles(Vec<String>);

impl Drop for ArenaFiles {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{n}"));
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A process holding stack `name` open (a bound UDP socket) until killed.
fn holder(name: &str, port: u16, share: Option<&str>) -> KillOnDrop {
    let mut c = Command::new(rbypass());
    c.args(["run", "--name", name, "--", "python3", "-c"])
        .arg(format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('127.0.0.1', {port}))\n\
             print('ready', flush=True)\n\
             time.sleep(30)"
        ))
        .env_remove("RBYPASS_SHARE_WITH")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(s) = share {
        c.env("RBYPASS_SHARE_WITH", s);
    }
    let mut child = c.spawn().expect("start the holder");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    KillOnDrop::new(child)
}

/// `rbypass run --name NAME -- python3 -c CODE` as nobody.
fn as_nobody(name: &str, code: &str, no_fail: Option<&str>) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(rbypass())
    .args(["run", "--name", name, "--", "python3", "-c", code])
    .env_remove("RBYPASS_NO_FAIL");
    if let Some(v) = no_fail {
        c.env("RBYPASS_NO_FAIL", v);
    }
    c.output().expect("run as nobody")
}

#[test]
fn another_user_is_refused_unless_the_stack_is_shared_with_it() {
    if !is_root() || !tool_available("python3") || !tool_available("setpriv") {
        eprintln!("skipped: needs root, setpriv and python3");
        return;
    }
    let pid = std::process::id();
    let private = format!("accpriv{pid}");
    let shared = format!("accshared{pid}");
    let _files = ArenaFiles(vec![private.clone(), shared.clone()]);

    let _h = holder(&private, 21230, None);
    let meta = std::fs::metadata(format!("/dev/shm/rbypass-{private}")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "arena mode");
    assert_eq!(meta.uid(), 0, "arena owner");

    // Refused in one line; the app still runs, on the kernel.
    let code = "import socket\n\
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                s.bind(('127.0.0.1', 0))\n\
                print('ran', flush=True)";
    let o = as_nobody(&private, code, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ran");
    assert!(
        err.contains("not shared with you") && err.contains("RBYPASS_SHARE_WITH=65534"),
        "the refusal says why and what to do: {err}"
    );
    // With RBYPASS_NO_FAIL=0 the refusal is an error.
    let o = as_nobody(&private, code, Some("0"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Never a partial attach: nobody never entered the process table.
    let a =
        rbypass_stack::arena::Arena::open_readonly(&rbypass_stack::arena::path_for_name(&private))
            .unwrap();
    assert_eq!(a.header().procs.snapshot().len(), 1, "only the holder");

    // Shared with nobody: its process joins the stack.
    let _s = holder(&shared, 21231, Some(&NOBODY.to_string()));
    let code = "import socket, time\n\
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                s.bind(('127.0.0.1', 21232))\n\
                print('ran', flush=True)\n\
                time.sleep(1.5)";
    let name = shared.clone();
    let joiner = std::thread::spawn(move || as_nobody(&name, code, Some("0")));
    let path = rbypass_stack::arena::path_for_name(&shared);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        let a = rbypass_stack::arena::Arena::open_readonly(&path).unwrap();
        seen = a.header().procs.snapshot().iter().any(|p| {
            p.alive
                && std::fs::metadata(format!("/proc/{}", p.pid)).is_ok_and(|m| m.uid() == NOBODY)
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = joiner.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(seen, "nobody's process joined the shared stack");
}
