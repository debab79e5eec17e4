//! A process that maps an arena read-only while another process writes it
//! never sees a torn header or a torn socket. The writer is this test binary
//! re-executed in a child process.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rbypass_stack::arena::Arena;
use rbypass_stack::stack::sockets_of;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{IfaceConfig, Stack, StackConfig};

const ROLE: &str = "RBYPASS_TEST_WRITER_ARENA";

/// The interface config the writer publishes for step `k`: every field derives from k.
fn iface_for(k: u32) -> IfaceConfig {
    let b = k.to_be_bytes();
    IfaceConfig::new(
        EthernetAddress([2, b[0], b[1], b[2], b[3], 0x5a]),
        Ipv4Addr::new(198, 18, b[2], b[3]),
        24,
        Some(Ipv4Addr::new(198, 18, b[3], b[2])),
        (k % 60000) as u16 + 1000,
    )
}

fn consistent(c: &IfaceConfig) -> bool {
    let k = u32::from_be_bytes([c.mac[1], c.mac[2], c.mac[3], c.mac[4]]);
    *c == iface_for(k)
}

/// Child role: writes as fast as it can for a bounded time.
#[test]
fn writer_child() {
    let Ok(path) = std::env::var(ROLE) else {
        return;
    };
    let stack = Stack::open_at(&PathBuf::from(path)).expect("attach");
    let end = Instant::now() + Duration::from_millis(1500);
    let mut k = 0u32;
    while Instant::now() < end && k < 5_000_000 {
        let mut c = stack.lock();
        c.set_iface(iface_for(k));
        // Socket identity changes too: bind port p on 198.18.x.y and connect to port p+1.
        let ip = c.iface().ip();
        if let Ok(s) = c.udp_open() {
            let p = 10_000 + (k % 20_000) as u16;
            if c.udp_bind(s, SocketAddrV4::new(ip, p)).is_ok() {
                let _ = c.udp_connect(s, SocketAddrV4::new(ip, p + 1));
            }
            if !k.is_multiple_of(3) {
                let _ = c.udp_close(s);
            }
        }
        if k % 1000 == 999 {
            for info in stack.sockets() {
                let _ = c.udp_close(info.id);
            }
        }
        k += 1;
    }
}

#[test]
fn readonly_reader_never_sees_torn_state() {
    let path = PathBuf::from(format!("/dev/shm/rbypass-torn{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(
        &path,
        "",
        &StackConfig {
            max_sockets: 256,
            max_bufs: 64,
            ..StackConfig::default()
        },
        iface_for(0),
    )
    .unwrap();
    stack.set_remove_on_drop(true);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["writer_child", "--exact", "--nocapture"])
        .env(ROLE, &path)
        .spawn()
        .expect("spawn writer");
    let ro = Arena::open_readonly(&path).expect("read-only attach");
    assert!(!ro.is_writable());
    let (mut reads, mut changes, mut socket_reads) = (0u64, 0u64, 0u64);
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap = ro.snapshot();
        assert!(
            consistent(&snap.iface),
            "torn interface config: {:?}",
            snap.iface
        );
        if snap.change_count != last {
            changes += 1;
            last = snap.change_count;
        }
        reads += 1;
        if reads % 16 == 0 {
            for s in sockets_of(&ro) {
                socket_reads += 1;
                if s.remote.port() != 0 {
                    assert_eq!(s.remote.port(), s.local.port() + 1, "torn socket: {s:?}");
                    assert_eq!(s.remote.ip(), s.local.ip(), "torn socket: {s:?}");
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "writer failed");
            break;
        }
        assert!(Instant::now() < deadline, "writer did not finish");
    }
    eprintln!("{reads} snapshots, {changes} distinct, {socket_reads} socket reads");
    assert!(
        changes > 10,
        "the reader really raced the writer ({changes} changes seen)"
    );
    assert!(socket_reads > 0);
}

#[test]
fn mismatched_build_and_bad_names_are_refused() {
    let path = PathBuf::from(format!("/dev/shm/rbypass-stamp{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let mut s = Stack::create_at(
            &path,
            "",
            &StackConfig {
                max_bufs: 64,
                ..StackConfig::default()
            },
            iface_for(1),
        )
        .unwrap();
        s.set_remove_on_drop(false);
    }
    // Another build: different layout stamp at offset 8.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let e = Stack::open_at(&path).unwrap_err().to_string();
    assert!(e.contains("different rbypass build"), "{e}");
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(Arena::open_readonly(&path)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(Arena::open_readonly(&path)
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    let _ = std::fs::remove_file(&path);
    assert!(Stack::open_named("no/slash")
        .unwrap_err()
        .to_string()
        .contains("invalid stack name"));
    assert!(Stack::open_named(&"x".repeat(33)).is_err());
    assert!(Stack::open_named("surely-not-a-stack-here")
        .unwrap_err()
        .to_string()
        .contains("no stack"));
}

#[test]
fn named_stack_is_shared_and_exclusive_to_create() {
    let name = format!("t{}", std::process::id());
    let cfg = StackConfig {
        max_bufs: 64,
        ..StackConfig::default()
    };
    let mut a = Stack::create_named(&name, &cfg, iface_for(2)).unwrap();
    a.set_remove_on_drop(true);
    assert!(matches!(
        Stack::create_named(&name, &cfg, iface_for(2)),
        Err(rbypass_stack::ArenaError::Exists(_))
    ));
    let b = Stack::open_or_create_named(&name, &cfg, iface_for(3)).unwrap();
    let s = a.lock().udp_open().unwrap();
    assert_eq!(
        b.sockets().len(),
        1,
        "the second handle sees the first one's socket"
    );
    b.lock().udp_close(s).unwrap();
    assert!(a.sockets().is_empty());
    assert_eq!(
        b.snapshot().iface,
        iface_for(2),
        "the existing stack's config is kept"
    );
}
