//! `rbypass run` with a device it cannot use: one line saying what to do,
//! and the app runs on the kernel (no LD_PRELOAD) unless RBYPASS_NO_FAIL=0,
//! which makes it an error (exit 1, the app never starts). Covers a missing
//! interface, missing privileges, an interface without an address, and an
//! interface whose XDP hook another stack holds.
//!
//! The namespace cases need root; without it they print "skipped" and pass.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, tool_available, KillOnDrop};
use support::veth::TwoHosts;

fn rbypass() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbypass"))
}

/// The app prints whether the library was preloaded.
const APP: [&str; 3] = ["sh", "-c", "echo ran preload=${LD_PRELOAD:+yes}"];

/// `rbypass run --nic SPEC [extra] -- APP`, optionally in a namespace.
fn run(ns: Option<&str>, spec: &str, extra: &[&str], no_fail: Option<&str>) -> Output {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(rbypass());
            c
        }
        None => Command::new(rbypass()),
    };
    c.args(["run", "--nic", spec])
        .args(extra)
        .arg("--")
        .args(APP);
    c.env_remove("RBYPASS_NO_FAIL").env_remove("RBYPASS_IP");
    if let Some(v) = no_fail {
        c.env("RBYPASS_NO_FAIL", v);
    }
    c.output().expect("run rbypass")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The default: a one-line warning containing `want`, then the app on the kernel.
fn assert_falls_back(o: &Output, want: &str) {
    let (out, err) = text(o);
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
    assert_eq!(
        out.trim(),
        "ran preload=",
        "the app runs without the library"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "{want:?} not in: {err}");
    assert!(err.contains("running without acceleration"), "{err}");
}

/// RBYPASS_NO_FAIL=0: exit 1 with the line, the app never ran.
fn assert_refuses(o: &Output, want: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.is_empty(), "the app must not run: {out}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "{want:?} not in: {err}");
}

#[test]
fn missing_interface() {
    for spec in ["xdp:rbtnosuch0", "packet:rbtnosuch0"] {
        assert_falls_back(&run(None, spec, &[], None), "no such network interface");
        assert_refuses(
            &run(None, spec, &[], Some("0")),
            "no such network interface",
        );
    }
}

#[test]
fn without_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !tool_available("setpriv") {
        eprintln!("skipped: needs root (to drop to nobody) and setpriv");
        return;
    }
    if !have_root_and_netns() {
        eprintln!("skipped: needs network namespaces");
        return;
    }
    let hosts = TwoHosts::create("ep", 76, 1).expect("namespaces");
    for (spec, want) in [
        (format!("xdp:{}", hosts.if_b), "CAP_BPF"),
        (format!("packet:{}", hosts.if_b), "CAP_BPF"),
    ] {
        let o = Command::new("ip")
            .args(["netns", "exec", hosts.b.name()])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(rbypass())
            .args(["run", "--nic", &spec, "--"])
            .args(APP)
            .env_remove("RBYPASS_NO_FAIL")
            .output()
            .unwrap();
        assert_falls_back(&o, want);
        let (_, err) = text(&o);
        assert!(
            err.contains("not permitted") || err.contains("needs"),
            "{err}"
        );
    }
}

#[test]
fn interface_without_address() {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let hosts = TwoHosts::create("ea", 77, 1).expect("namespaces");
    let flushed = hosts.b.ip(&["addr", "flush", "dev", &hosts.if_b]).unwrap();
    assert!(flushed.status.success());
    let spec = format!("xdp:{}", hosts.if_b);
    let ns = Some(hosts.b.name());
    assert_refuses(&run(ns, &spec, &[], Some("0")), "no IPv4 address");
    // With an address given, the device is usable.
    let o = run(ns, &spec, &["--ip", "198.18.77.2/24"], Some("0"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "ran preload=yes", "{err}");
}

#[test]
fn interface_held_by_another_stack() {
    if !have_root_and_netns() || !tool_available("python3") {
        eprintln!("skipped: needs root, network namespaces and python3");
        return;
    }
    let hosts = TwoHosts::create("eb", 78, 1).expect("namespaces");
    let first = format!("errbusy{}", std::process::id());
    let _arena = scopeguard(&first);
    let spec = format!("xdp:{}", hosts.if_b);
    // A first stack that opens the device (its first socket does) and holds it.
    let holder = Command::new("ip")
        .args(["netns", "exec", hosts.b.name()])
        .arg(rbypass())
        .args([
            "run", "--nic", &spec, "--name", &first, "--", "python3", "-c",
        ])
        .arg(
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', 21180))\n\
             print('bound', flush=True)\n\
             time.sleep(20)",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = KillOnDrop::new(holder);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = Command::new(rbypass()).arg("stackdump").output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        if list
            .lines()
            .any(|l| l.starts_with(&first) && l.contains(&spec))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first stack never attached:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ns = Some(hosts.b.name());
    // Another stack: the hook is taken.
    assert_refuses(
        &run(ns, &spec, &["--name", "errbusyother"], Some("0")),
        "another XDP program is attached",
    );
    // The same stack from an unrelated process: it joins the stack's device.
    let o = run(ns, &spec, &["--name", &first], Some("0"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "ran preload=yes", "{err}");
    // packet: on the same interface is fine for another stack.
    let o = run(ns, &format!("packet:{}", hosts.if_b), &[], Some("0"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "ran preload=yes", "{err}");
    drop(holder);
}

/// Removes a named stack's arena file when dropped.
struct ArenaFile(String);

impl Drop for ArenaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{}", self.0));
    }
}

fn scopeguard(name: &str) -> ArenaFile {
    ArenaFile(name.to_string())
}

#[test]
fn queue_held_by_another_af_xdp_socket() {
    use rbypass_nic::xsk::{bind_flags, RingSizes, Xsk};
    if !have_root_and_netns() || !tool_available("python3") {
        eprintln!("skipped: needs root, network namespaces and python3");
        return;
    }
    let hosts = TwoHosts::create("eq", 69, 1).expect("namespaces");
    let ifname = hosts.if_b.clone();
    // Another program's AF_XDP socket on queue 0 (no XDP program needed).
    let other = support::veth::in_netns(hosts.b.name(), move || {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let len = 4 << 20;
        // SAFETY: a fresh anonymous mapping for the UMEM; it is never
        // unmapped (the test process ends first).
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(umem, libc::MAP_FAILED);
        let sizes = RingSizes {
            fill: 64,
            completion: 64,
            rx: 64,
            tx: 64,
        };
        Xsk::open(
            ifindex,
            0,
            (umem.cast(), len),
            2048,
            None,
            sizes,
            bind_flags::COPY,
        )
        .expect("another AF_XDP socket on queue 0")
    })
    .unwrap();
    // The app's first socket opens the device: its queue 0 is taken.
    let app = "import socket\n\
               s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
               s.bind(('0.0.0.0', 21181))\n\
               print('bound')";
    let o = Command::new("ip")
        .args(["netns", "exec", hosts.b.name()])
        .arg(rbypass())
        .args(["run", "--nic", &format!("xdp:{}", hosts.if_b), "--"])
        .args(["python3", "-c", app])
        .env_remove("RBYPASS_NO_FAIL")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "bound", "the app runs on the kernel: {err}");
    assert!(
        err.contains("queue 0 is already used by another AF_XDP socket"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("WARN")).count(),
        1,
        "one warning line: {err}"
    );
    assert_eq!(
        err.matches("xdp:").count(),
        1,
        "the device named once: {err}"
    );
    drop(other);
}
