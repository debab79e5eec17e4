//! Unmodified C programs under `rbypass run`, with the kernel as the oracle:
//! each program prints what it saw, and must print the same with and without
//! rbypass. When both ends run under one stack name, the stack's counters
//! must show the traffic went through the stack, not the kernel. Mixed runs
//! (one end under rbypass, the other plain) must work unchanged.
//!
//! Needs `cc` and `target/release/librbypass.so` (`cargo build --release`,
//! which scripts/test.sh runs first).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn rbypass() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbypass"))
}

/// Compiles tests/c/NAME.c once per test binary run.
fn compile(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rbypass-preload-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    // Tests run in parallel and may want the same program: each compiles to
    // a name of its own and renames it into place, so a program that exists
    // is complete (running one still being written fails with ETXTBSY).
    let tmp = dir.join(format!("{name}.{:?}", std::thread::current().id()));
    let st = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("cc is needed for the preload tests (apt-get install gcc)");
    assert!(st.success(), "compiling {}", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn library_present() {
    let lib = rbypass().with_file_name("librbypass.so");
    assert!(
        lib.exists(),
        "{} is missing: run `cargo build --release` first (scripts/test.sh does)",
        lib.display()
    );
}

/// How one end runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Kernel,
    /// Under `rbypass run --name` with the given profile.
    Stack(&'static str),
}

/// A child that is killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mode: Mode, stack: &str, prog: &Path, args: &[&str]) -> Proc {
    let mut cmd = match mode {
        Mode::Kernel => Command::new(prog),
        Mode::Stack(profile) => {
            let mut c = Command::new(rbypass());
            c.args(["run", "--name", stack, "--profile", profile, "--"])
                .arg(prog);
            // The test reads the stack's counters after the apps exit.
            c.env("RBYPASS_KEEP_STACK", "1");
            c
        }
    };
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_remove("RBYPASS_NAME");
    Proc(cmd.spawn().expect("spawn"))
}

/// Waits for the process to exit (killing it after LIMIT); returns its stdout.
fn finish(mut p: Proc, already: String) -> String {
    let start = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            let mut out = already;
            p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            assert!(st.success(), "exited with {st}; output:\n{out}");
            return out;
        }
        assert!(start.elapsed() < LIMIT, "timed out; killed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the server's first line ("listening") so the client can start.
fn ready(p: &mut Proc) -> String {
    let out = p.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send((line, r.into_inner()));
    });
    let (line, out) = rx
        .recv_timeout(LIMIT)
        .expect("server never said it was listening");
    assert_eq!(line.trim(), "listening");
    p.0.stdout = Some(out);
    line
}

/// The stack's frame counter (frames carried by the loop NIC).
fn stack_frames(stack: &str) -> u64 {
    support::stackdump::counter(stack, "rx_frames")
}

/// A unique stack name, whose arena is removed when dropped.
struct StackName(String);

impl StackName {
    fn new(test: &str) -> StackName {
        let n = format!("t{}-{test}", std::process::id());
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{n}"));
        StackName(n)
    }
}

impl Drop for StackName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

/// A self-contained program (both ends inside it): kernel output == rbypass
/// output, in the spinning and the sleeping profiles, through the stack.
fn single(prog: &str, args: &[&str]) {
    library_present();
    let bin = compile(prog);
    let oracle = finish(spawn(Mode::Kernel, "", &bin, args), String::new());
    for profile in ["latency", "safe"] {
        let name = StackName::new(&format!("{prog}-{profile}"));
        let got = finish(
            spawn(Mode::Stack(profile), &name.0, &bin, args),
            String::new(),
        );
        assert_eq!(
            got, oracle,
            "{prog} under rbypass ({profile}) differs from the kernel"
        );
        assert!(
            stack_frames(&name.0) > 0,
            "{prog}: no traffic went through the stack"
        );
    }
}

/// A server and a client program in every combination of kernel and stack.
fn pair(prog: &str, server: &[&str], client: &[&str], min_frames: u64) {
    library_present();
    let bin = compile(prog);
    let run = |s: Mode, c: Mode, stack: &str| {
        let mut srv = spawn(s, stack, &bin, server);
        let first = ready(&mut srv);
        let cl = finish(spawn(c, stack, &bin, client), String::new());
        let sv = finish(srv, first);
        (sv, cl)
    };
    let oracle = run(Mode::Kernel, Mode::Kernel, "");
    let both = StackName::new(&format!("{prog}-both"));
    assert_eq!(
        run(Mode::Stack("safe"), Mode::Stack("safe"), &both.0),
        oracle,
        "{prog}: both ends on one stack"
    );
    let frames = stack_frames(&both.0);
    assert!(
        frames >= min_frames,
        "{prog}: only {frames} frames through the stack"
    );
    let spin = StackName::new(&format!("{prog}-spin"));
    assert_eq!(
        run(Mode::Stack("latency"), Mode::Stack("latency"), &spin.0),
        oracle,
        "{prog}: both ends spinning"
    );
    let mixed = StackName::new(&format!("{prog}-mixed"));
    assert_eq!(
        run(Mode::Kernel, Mode::Stack("safe"), &mixed.0),
        oracle,
        "{prog}: rbypass client, kernel server"
    );
    assert_eq!(
        run(Mode::Stack("safe"), Mode::Kernel, &mixed.0),
        oracle,
        "{prog}: kernel client, rbypass server"
    );
}

#[test]
fn tcp_echo_round_trips() {
    pair(
        "echo",
        &["tcp-server", "24101", "2000"],
        &["tcp-client", "24101", "2000"],
        4000,
    );
}

#[test]
fn udp_echo_round_trips() {
    pair(
        "echo",
        &["udp-server", "24102", "2000"],
        &["udp-client", "24102", "2000"],
        4000,
    );
}

#[test]
fn data_written_before_exit_reaches_the_peer() {
    pair("exit_flush", &["server", "24103"], &["client", "24103"], 64);
}

#[test]
fn threads_share_sockets_and_the_stack() {
    single("threads", &["24110"]);
}

#[test]
fn accepted_socket_survives_exec() {
    pair(
        "exec_inherit",
        &["server", "24104"],
        &["client", "24104"],
        4,
    );
    // The variadic exec calls, in turn (the stack names are per program).
    pair(
        "exec_inherit",
        &["server-l", "24107"],
        &["client", "24107"],
        4,
    );
    pair(
        "exec_inherit",
        &["server-le", "24108"],
        &["client", "24108"],
        4,
    );
    pair(
        "exec_inherit",
        &["server-spawn", "24109"],
        &["client", "24109"],
        4,
    );
}

#[test]
fn epoll_select_poll_and_fork() {
    single("epoll_fork", &["24105", "1000"]);
}

#[test]
fn signals_interrupt_select_poll_and_epoll_like_the_kernel() {
    // A spinning wait (latency profile) once never ran the deferred handler.
    single("signal_wait", &["24131"]);
}

#[test]
fn timeouts_and_signals_match_the_kernel() {
    single("signals", &["24106"]);
}
