//! The rtnetlink client against the real kernel: the unprivileged part in
//! the test's own namespace, the rest (root and `ip` needed, else skipped)
//! in a namespace of its own with a veth pair, an address, a neighbour and a
//! default route, whose changes the monitor must report.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{in_netns, ip, ip_mac, ipn, Netns};
use rbypass_nic::netlink::{
    snapshot, Event, Monitor, NeighInfo, Netlink, NetlinkError, RouteInfo, NUD_FAILED,
    NUD_INCOMPLETE, NUD_PERMANENT, NUD_REACHABLE,
};

const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 1);
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0x40, 1];
const OWN: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 2);

/// Runs `ip -n NS -batch -` on `commands`, which must succeed.
fn ip_batch(ns: &str, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}

/// Reads events until `want` holds for one of each, or 5 s pass (each
/// predicate must match some event). Returns every event read.
fn wait_events(mon: &mut Monitor, want: &[&dyn Fn(&Event) -> bool]) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    loop {
        mon.read_events(&mut events).unwrap();
        if want.iter().all(|w| events.iter().any(w)) {
            return events;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "events missing after 5 s; got {events:#?}");
        let mut pfd = libc::pollfd {
            fd: mon.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int + 1) };
    }
}

#[test]
fn unprivileged_reads() {
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            eprintln!("netlink test skipped: no netlink socket: {e}");
            return;
        }
    };
    match nl.link_by_name("rbnl-missing") {
        Err(NetlinkError::NoSuchLink(n)) => assert_eq!(n, "rbnl-missing"),
        r => panic!("expected NoSuchLink, got {r:?}"),
    }
    assert!(matches!(
        nl.link_by_name("a-name-much-too-long-for-linux"),
        Err(NetlinkError::NoSuchLink(_))
    ));
    assert!(matches!(
        nl.link_by_index(0x7fff_fff0),
        Err(NetlinkError::NoSuchLink(_))
    ));
    let lo = snapshot("lo").unwrap();
    assert_eq!(lo.link.name, "lo");
    assert!(lo.link.mtu > 0);
    assert_eq!(nl.link_by_index(lo.link.ifindex).unwrap(), lo.link);
    nl.routes().unwrap();
    let mut mon = Monitor::open().unwrap();
    let mut events = Vec::new();
    mon.read_events(&mut events).unwrap();
    assert!(!mon.take_overrun());
}

#[test]
fn namespace_view_and_changes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netlink namespace test skipped: needs root");
        return;
    }
    let name = format!("rbtnl{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &name]) {
        eprintln!("netlink namespace test skipped: {e}");
        return;
    }
    let ns = Netns(name);
    let ns = ns.0.as_str();
    ipn(
        ns,
        &[
            "link", "add", "rbnl0", "type", "veth", "peer", "name", "rbnl1",
        ],
    );
    ipn(ns, &["addr", "add", "198.18.40.2/24", "dev", "rbnl0"]);
    ipn(ns, &["link", "set", "rbnl0", "mtu", "1400", "up"]);
    ipn(ns, &["link", "set", "rbnl1", "up"]);
    ipn(
        ns,
        &[
            "neigh",
            "add",
            "198.18.40.1",
            "lladdr",
            "02:00:00:00:40:01",
            "dev",
            "rbnl0",
            "nud",
            "permanent",
        ],
    );
    ipn(ns, &["route", "add", "default", "via", "198.18.40.1"]);
    let mac = ip_mac(ns, "rbnl0");

    in_netns(ns, || {
        let s = snapshot("rbnl0").unwrap();
        let ifindex = s.link.ifindex;
        assert_eq!(s.link.name, "rbnl0");
        assert_eq!(s.link.mac, mac);
        assert_eq!(s.link.mtu, 1400);
        assert!(s.link.up);
        assert!(s.link.rx_queues >= 1 && s.link.tx_queues >= 1);
        let a = s.addr.expect("an address");
        assert_eq!((a.ifindex, a.addr, a.prefix_len), (ifindex, OWN, 24));
        assert_eq!(s.gateway, Some(GW));
        let gw_neigh = NeighInfo {
            ifindex,
            addr: GW,
            mac: Some(GW_MAC),
            state: NUD_PERMANENT,
        };
        assert_eq!(s.neighbours, vec![gw_neigh]);

        let mut nl = Netlink::open().unwrap();
        assert_eq!(nl.link_by_index(ifindex).unwrap(), s.link);
        assert!(matches!(
            nl.link_by_name("rbnl9"),
            Err(NetlinkError::NoSuchLink(_))
        ));
        let routes = nl.routes().unwrap();
        let connected = RouteInfo {
            dst: Ipv4Addr::new(198, 18, 40, 0),
            prefix_len: 24,
            gateway: None,
            oif: ifindex,
        };
        assert!(routes.contains(&connected), "{routes:?}");

        // Changes while running.
        let mut mon = Monitor::open().unwrap();
        let new_neigh = Ipv4Addr::new(198, 18, 40, 5);
        ipn(ns, &["link", "set", "rbnl0", "mtu", "1300"]);
        ipn(
            ns,
            &[
                "neigh",
                "add",
                "198.18.40.5",
                "lladdr",
                "02:00:00:00:40:05",
                "dev",
                "rbnl0",
                "nud",
                "permanent",
            ],
        );
        ipn(ns, &["route", "del", "default"]);
        wait_events(
            &mut mon,
            &[
                &|e| matches!(e, Event::Link(l) if l.ifindex == ifindex && l.mtu == 1300),
                &|e| {
                    matches!(e, Event::Neigh(n) if n.addr == new_neigh
                        && n.mac == Some([2, 0, 0, 0, 0x40, 5]) && n.is_valid())
                },
                &|e| {
                    matches!(e, Event::RouteRemoved(r) if r.dst.is_unspecified()
                        && r.prefix_len == 0 && r.gateway == Some(GW) && r.oif == ifindex)
                },
            ],
        );
        assert_eq!(snapshot("rbnl0").unwrap().gateway, None);

        // Telling the kernel a MAC.
        let taught = Ipv4Addr::new(198, 18, 40, 7);
        nl.neigh_set(ifindex, taught, [2, 0, 0, 0, 0x40, 7])
            .unwrap();
        let shown = ipn(ns, &["neigh", "show", "198.18.40.7", "dev", "rbnl0"]);
        assert!(
            shown.contains("lladdr 02:00:00:00:40:07") && shown.contains("REACHABLE"),
            "{shown:?}"
        );
        let n = nl.neighbours(ifindex).unwrap();
        assert!(n
            .iter()
            .any(|n| n.addr == taught && n.state == NUD_REACHABLE && n.is_valid()));
        wait_events(
            &mut mon,
            &[&|e| matches!(e, Event::Neigh(n) if n.addr == taught)],
        );

        // Asking the kernel to resolve: nobody answers. The entry is
        // INCOMPLETE at once, but the kernel tells only of its end: FAILED
        // after its probes (3 of 100 ms here), or REACHABLE on an answer.
        ipn(
            ns,
            &[
                "ntable",
                "change",
                "name",
                "arp_cache",
                "dev",
                "rbnl0",
                "retrans",
                "100",
            ],
        );
        let unknown = Ipv4Addr::new(198, 18, 40, 9);
        nl.neigh_resolve(ifindex, unknown).unwrap();
        let n = nl.neighbours(ifindex).unwrap();
        assert!(n
            .iter()
            .any(|n| n.addr == unknown && n.state == NUD_INCOMPLETE && !n.is_valid()));
        let shown = ipn(ns, &["neigh", "show", "198.18.40.9", "dev", "rbnl0"]);
        assert!(shown.contains("INCOMPLETE"), "{shown:?}");
        wait_events(
            &mut mon,
            &[
                &|e| matches!(e, Event::Neigh(n) if n.addr == unknown && n.state == NUD_FAILED && n.mac.is_none()),
            ],
        );

        // Addresses, and the link going away.
        ipn(ns, &["addr", "add", "198.18.41.2/24", "dev", "rbnl0"]);
        let second = Ipv4Addr::new(198, 18, 41, 2);
        wait_events(
            &mut mon,
            &[&|e| matches!(e, Event::AddrAdded(a) if a.addr == second && a.ifindex == ifindex)],
        );
        let addrs = nl.addrs(ifindex).unwrap();
        assert_eq!(
            addrs.iter().map(|a| a.addr).collect::<Vec<_>>(),
            vec![OWN, second]
        );
        // An overrun: more notifications than the receive buffer holds are
        // flagged, not an error, and later ones still arrive.
        let mut batch = String::new();
        for i in 0..20_480u32 {
            batch += &format!(
                "route add 198.19.{}.{}/32 via 198.18.40.1\n",
                i >> 8,
                i & 255
            );
        }
        ip_batch(ns, &batch);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = Vec::new();
        while mon.read_events(&mut events).unwrap() > 0 {
            assert!(Instant::now() < deadline, "notifications never drained");
            events.clear();
        }
        assert!(mon.overrun());
        assert!(mon.take_overrun());
        assert!(!mon.overrun());
        ipn(
            ns,
            &["route", "add", "198.18.42.0/24", "via", "198.18.40.1"],
        );
        wait_events(
            &mut mon,
            &[&|e| matches!(e, Event::RouteAdded(r) if r.dst == Ipv4Addr::new(198, 18, 42, 0))],
        );

        ipn(ns, &["link", "del", "rbnl0"]);
        wait_events(
            &mut mon,
            &[
                &|e| *e == Event::LinkRemoved(ifindex),
                &|e| matches!(e, Event::AddrRemoved(a) if a.addr == OWN),
            ],
        );
        assert!(matches!(
            nl.link_by_index(ifindex),
            Err(NetlinkError::NoSuchLink(_))
        ));
        assert!(!mon.take_overrun());
    });
}
