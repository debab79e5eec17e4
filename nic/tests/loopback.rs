//! The `loop` device and the driver's blocking calls: a stack on the
//! in-arena loopback talks to itself, and `run_until` gives a blocking
//! receive with a timeout.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::loopback::LoopbackNic;
use rbypass_nic::Nic;
use rbypass_stack::{IfaceConfig, Stack, StackConfig};

fn loop_stack(tag: &str) -> Arc<Stack> {
    let path =
        std::path::PathBuf::from(format!("/dev/shm/rbypass-niclo{tag}{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut s = Stack::create_at(
        &path,
        "",
        &StackConfig {
            max_bufs: 256,
            ..StackConfig::default()
        },
        IfaceConfig::loopback(),
    )
    .unwrap();
    s.set_remove_on_drop(true);
    Arc::new(s)
}

#[test]
fn blocking_receive_over_loop() {
    let stack = loop_stack("a");
    let mut d = Driver::new(stack.clone(), LoopbackNic::default());
    assert_eq!(d.nic().name(), "loop");
    let (a, b) = {
        let mut c = stack.lock();
        let a = c.udp_open().unwrap();
        let b = c.udp_open().unwrap();
        c.udp_bind(b, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000))
            .unwrap();
        (a, b)
    };
    // Any address of 127/8 is ours.
    stack
        .lock()
        .udp_send_to(
            a,
            b"to myself",
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4000),
        )
        .unwrap();
    let mut buf = [0u8; 32];
    let got = d
        .run_until(Duration::from_secs(2), |c| {
            c.udp_recv_from(b, &mut buf, false).ok()
        })
        .unwrap();
    let m = got.expect("datagram arrives");
    assert_eq!(&buf[..m.copied], b"to myself");
    // Nothing more: the blocking call times out, roughly on time.
    let t = Instant::now();
    let none = d
        .run_until(Duration::from_millis(50), |c| {
            c.udp_recv_from(b, &mut buf, false).ok()
        })
        .unwrap();
    assert!(none.is_none());
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(50) && e < Duration::from_secs(2),
        "{e:?}"
    );
}

#[test]
fn loop_nic_reflects_frames_for_other_hosts() {
    // A frame for another host goes out the loop device and comes straight
    // back; the stack sees its own ARP request and ignores it.
    let stack = loop_stack("b");
    let mut d = Driver::new(stack.clone(), LoopbackNic::default());
    {
        let mut c = stack.lock();
        let mut iface = c.iface();
        iface.ip = [198, 18, 9, 1];
        iface.prefix_len = 24;
        c.set_iface(iface);
        let s = c.udp_open().unwrap();
        c.udp_send_to(s, b"x", SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 2), 9))
            .unwrap();
    }
    d.poll(1).unwrap();
    d.poll(2).unwrap();
    let c = stack.lock();
    let k = &c.header().counters;
    assert_eq!(k.arp_requests_sent.get(), 1);
    assert!(k.rx_frames.get() >= 1, "the request came back");
    assert_eq!(k.arp_replies_sent.get(), 0);
    c.check_consistency().unwrap();
}
