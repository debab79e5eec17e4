//! The ARP cache: a fixed table in the arena mapping IPv4 neighbours to MAC
//! addresses, with expiry, and a bounded queue of frames held per neighbour
//! while it resolves.
//!
//! The table is a hash with a probe window of [`PROBE`] entries: lookups scan
//! the whole window, so deletion needs no tombstones, and inserting into a full
//! window evicts its least recently confirmed resolved entry.

use std::net::Ipv4Addr;

use crate::pool::PktQueue;

/// Entries examined per lookup.
pub const PROBE: usize = 8;
/// How long a resolved entry stays valid without confirmation.
pub const REACHABLE_NS: u64 = 60 * crate::clock::SEC;
/// Before expiry, a use of the entry triggers a refresh request this early,
/// so traffic never stalls on re-resolution.
pub const REFRESH_WINDOW_NS: u64 = 10 * crate::clock::SEC;
/// Interval between ARP requests for an unresolved neighbour.
pub const RETRY_NS: u64 = crate::clock::SEC;
/// Requests sent before a neighbour is declared unreachable.
pub const MAX_TRIES: u8 = 3;

/// States of an [`ArpEntry`].
pub mod state {
    /// Unused slot.
    pub const FREE: u8 = 0;
    /// Request sent, no reply yet; frames wait in `pending`.
    pub const INCOMPLETE: u8 = 1;
    /// MAC known and confirmed.
    pub const REACHABLE: u8 = 2;
}

/// One neighbour.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArpEntry {
    /// IPv4 address, network order bytes.
    pub ip: [u8; 4],
    pub mac: [u8; 6],
    pub state: u8,
    /// Requests sent in the current resolution or refresh.
    pub tries: u8,
    /// When a REACHABLE entry expires, or when an INCOMPLETE one retries.
    pub deadline_ns: u64,
    /// When the entry was last confirmed by a packet from the neighbour.
    pub confirmed_ns: u64,
    /// Frames waiting for resolution.
    pub pending: PktQueue,
}

impl ArpEntry {
    /// An unused entry.
    pub const FREE: ArpEntry = ArpEntry {
        ip: [0; 4],
        mac: [0; 6],
        state: state::FREE,
        tries: 0,
        deadline_ns: 0,
        confirmed_ns: 0,
        pending: PktQueue::EMPTY,
    };

    /// The neighbour's address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }
}

fn home(ip: Ipv4Addr, n: usize) -> usize {
    (u32::from(ip).wrapping_mul(0x9e37_79b1) >> 8) as usize % n
}

/// Finds the entry of `ip`.
pub fn find(table: &[ArpEntry], ip: Ipv4Addr) -> Option<usize> {
    let n = table.len();
    let h = home(ip, n);
    (0..PROBE.min(n))
        .map(|i| (h + i) % n)
        .find(|&i| table[i].state != state::FREE && table[i].ip == ip.octets())
}

/// Picks a slot for a new entry for `ip`: a free one in the probe window, or
/// the least recently confirmed REACHABLE one. Returns None only if every
/// entry of the window is resolving (they are never evicted, so their
/// pending frames are never lost silently).
pub fn slot_for(table: &[ArpEntry], ip: Ipv4Addr) -> Option<usize> {
    let n = table.len();
    let h = home(ip, n);
    let window = || (0..PROBE.min(n)).map(|i| (h + i) % n);
    if let Some(i) = window().find(|&i| table[i].state == state::FREE) {
        return Some(i);
    }
    window()
        .filter(|&i| table[i].state == state::REACHABLE)
        .min_by_key(|&i| table[i].confirmed_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_evict() {
        let mut t = vec![ArpEntry::FREE; 8];
        for k in 0..8u8 {
            let ip = Ipv4Addr::new(198, 18, 0, k);
            let i = slot_for(&t, ip).unwrap();
            t[i] = ArpEntry {
                ip: ip.octets(),
                state: state::REACHABLE,
                confirmed_ns: u64::from(k),
                ..ArpEntry::FREE
            };
        }
        for k in 0..8u8 {
            assert!(find(&t, Ipv4Addr::new(198, 18, 0, k)).is_some());
        }
        // Full: the oldest confirmed entry goes.
        let i = slot_for(&t, Ipv4Addr::new(198, 18, 0, 99)).unwrap();
        assert_eq!(t[i].ip(), Ipv4Addr::new(198, 18, 0, 0));
        // Resolving entries are never evicted.
        for e in t.iter_mut() {
            e.state = state::INCOMPLETE;
        }
        assert_eq!(slot_for(&t, Ipv4Addr::new(198, 18, 0, 99)), None);
        assert_eq!(find(&t, Ipv4Addr::new(198, 18, 0, 99)), None);
    }
}
