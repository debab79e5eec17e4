//! Plumbing test for the TAP backend, with no stack involved: the kernel in a
//! private namespace pings an address behind our TAP device, and we check that
//! its ARP request reaches our file descriptor. Answers nothing.

mod support;

use std::time::{Duration, Instant};

use rbypass_nic::tap::TapDevice;
use support::netns::{have_root_and_netns, tool_available, KillOnDrop, NetNs};

const KERNEL_IP: [u8; 4] = [198, 18, 0, 1];
const PEER_IP: [u8; 4] = [198, 18, 0, 2];
const MAX_WAIT: Duration = Duration::from_secs(2);
const MAX_FRAMES: usize = 100;

/// Returns true if `frame` is an Ethernet/IPv4 ARP request from `sender` asking
/// for `target`.
fn is_arp_request(frame: &[u8], sender: [u8; 4], target: [u8; 4]) -> bool {
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x06] // ethertype ARP
        && frame[14..16] == [0x00, 0x01] // htype Ethernet
        && frame[16..18] == [0x08, 0x00] // ptype IPv4
        && frame[18] == 6
        && frame[19] == 4
        && frame[20..22] == [0x00, 0x01] // opcode request
        && frame[28..32] == sender
        && frame[38..42] == target
}

#[test]
fn kernel_arp_request_reaches_tap_fd() {
    if !have_root_and_netns() {
        println!("skipped: needs root and network namespaces");
        return;
    }
    if !tool_available("ping") {
        println!("skipped: needs ping (apt-get install iputils-ping)");
        return;
    }

    let ns = NetNs::create("tr").expect("create namespace");
    let ifname = format!("rbtt{}", std::process::id());
    // Declared after `ns`, so dropped first: the fd closes, then the
    // namespace goes away.
    let tap = TapDevice::open(&ifname).expect("open TAP device");
    assert_eq!(tap.name(), ifname);
    let mtu = tap.mtu().expect("query MTU");
    assert!(mtu >= 576, "unexpected MTU {mtu}");

    ns.move_link(tap.name()).expect("move TAP into namespace");
    ns.disable_ipv6().expect("disable IPv6 in namespace");
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", tap.name()])
        .expect("set address");
    ns.ip(&["link", "set", tap.name(), "up"])
        .expect("bring TAP up");
    ns.ip(&["link", "set", "lo", "up"]).expect("bring lo up");

    let ping = KillOnDrop::new(
        ns.spawn(&["ping", "-c", "1", "-W", "1", "198.18.0.2"])
            .expect("spawn ping"),
    );

    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut frames = 0usize;
    let mut found = false;
    while !found && frames < MAX_FRAMES {
        let remaining = MAX_WAIT.saturating_sub(start.elapsed());
        if remaining.is_zero() || !tap.wait_readable(remaining).expect("poll TAP") {
            break;
        }
        while let Some(len) = tap.recv(&mut buf).expect("read TAP") {
            frames += 1;
            if is_arp_request(&buf[..len], KERNEL_IP, PEER_IP) {
                found = true;
                break;
            }
            if frames >= MAX_FRAMES {
                break;
            }
        }
    }

    let out = ping.finish().expect("reap ping");
    assert!(
        found,
        "no ARP request for 198.18.0.2 from 198.18.0.1 within {MAX_WAIT:?} \
         ({frames} other frames seen); ping stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    println!(
        "ARP request seen after {frames} frame(s) in {:?}",
        start.elapsed()
    );
}
