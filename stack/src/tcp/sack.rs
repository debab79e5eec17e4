//! SACK bookkeeping (RFC 2018, RFC 6675) in fixed-size arena structs.
//!
//! [`RangeSet`] keeps sorted, disjoint, non-adjacent sequence ranges in a
//! fixed array: the receiver uses it for the out-of-order data it reports in
//! SACK blocks, the sender (inside [`SackScoreboard`]) for what the peer has
//! reported. Sequence numbers compare modulo 2^32, valid within one window.

/// `a` before `b` in sequence space.
fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn le(a: u32, b: u32) -> bool {
    !lt(b, a)
}

/// Up to `N` disjoint half-open ranges `[start, end)`, sorted by start.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSet<const N: usize> {
    r: [(u32, u32); N],
    len: u32,
}

impl<const N: usize> RangeSet<N> {
    /// No ranges.
    pub const EMPTY: Self = RangeSet {
        r: [(0, 0); N],
        len: 0,
    };

    /// Whether no range is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ranges in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.r[..self.len as usize].iter().copied()
    }

    /// Adds `[s, e)`, merging with overlapping or adjacent ranges. When the
    /// result would need more than `N` ranges the highest is dropped and
    /// `false` returned (SACK information is advisory; the data is kept).
    pub fn insert(&mut self, s: u32, e: u32) -> bool {
        if !lt(s, e) {
            return true;
        }
        let len = self.len as usize;
        // First range that ends at or after s (could merge or lies above).
        let mut k = 0;
        while k < len && lt(self.r[k].1, s) {
            k += 1;
        }
        // Ranges k..j overlap or touch [s, e).
        let mut j = k;
        let (mut ns, mut ne) = (s, e);
        while j < len && le(self.r[j].0, ne) {
            if lt(self.r[j].0, ns) {
                ns = self.r[j].0;
            }
            if lt(ne, self.r[j].1) {
                ne = self.r[j].1;
            }
            j += 1;
        }
        let merged = j - k;
        if merged == 0 {
            // Insert a new range at k, shifting the rest up.
            let fits = len < N;
            let top = if fits { len } else { N - 1 };
            if k >= N {
                return false;
            }
            let mut m = top;
            while m > k {
                self.r[m] = self.r[m - 1];
                m -= 1;
            }
            self.r[k] = (ns, ne);
            self.len = (top + 1) as u32;
            return fits;
        }
        // Replace ranges k..j by one, closing the gap.
        self.r[k] = (ns, ne);
        let removed = merged - 1;
        for m in k + 1..len - removed {
            self.r[m] = self.r[m + removed];
        }
        self.len = (len - removed) as u32;
        true
    }

    /// Forgets everything below `seq` (cumulatively acknowledged or delivered).
    pub fn remove_below(&mut self, seq: u32) {
        let len = self.len as usize;
        let mut drop = 0;
        while drop < len && le(self.r[drop].1, seq) {
            drop += 1;
        }
        for m in 0..len - drop {
            self.r[m] = self.r[m + drop];
        }
        self.len = (len - drop) as u32;
        if self.len > 0 && lt(self.r[0].0, seq) {
            self.r[0].0 = seq;
        }
    }

    /// Whether `s` lies in a range.
    pub fn contains(&self, s: u32) -> bool {
        self.range_of(s).is_some()
    }

    /// The range holding `s`, if any.
    pub fn range_of(&self, s: u32) -> Option<(u32, u32)> {
        self.iter().find(|x| le(x.0, s) && lt(s, x.1))
    }

    /// The start of the first range above `s`, if any.
    pub fn next_start_after(&self, s: u32) -> Option<u32> {
        self.iter().map(|x| x.0).find(|&st| lt(s, st))
    }

    /// Fills `out` with SACK blocks, the range holding `recent` (the most
    /// recently received segment) first, as RFC 2018 4 asks.
    pub fn sack_blocks(&self, recent: Option<(u32, u32)>, out: &mut [(u32, u32)]) -> usize {
        let mut n = 0;
        let first = recent.and_then(|r| self.iter().find(|x| le(x.0, r.0) && le(r.1, x.1)));
        if let Some(f) = first {
            if n < out.len() {
                out[n] = f;
                n += 1;
            }
        }
        for x in self.iter() {
            if Some(x) != first && n < out.len() {
                out[n] = x;
                n += 1;
            }
        }
        n
    }
}

/// The sender's view of what the peer has SACKed (RFC 6675 scoreboard).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SackScoreboard {
    b: RangeSet<8>,
}

impl SackScoreboard {
    /// Nothing SACKed.
    pub const EMPTY: Self = SackScoreboard { b: RangeSet::EMPTY };

    /// Records the peer's SACK blocks; blocks outside `(una, nxt]` (stale,
    /// D-SACK or bogus) are ignored. Returns how many were accepted.
    pub fn update(&mut self, una: u32, nxt: u32, blocks: &[(u32, u32)]) -> u32 {
        let mut n = 0;
        for &(s, e) in blocks {
            if lt(una, s) && le(e, nxt) && lt(s, e) {
                self.b.insert(s, e);
                n += 1;
            }
        }
        n
    }

    /// Drops what the cumulative ACK now covers.
    pub fn on_cumulative_ack(&mut self, una: u32) {
        self.b.remove_below(una);
    }

    /// Whether the byte at `s` was SACKed.
    pub fn is_sacked(&self, s: u32) -> bool {
        self.b.contains(s)
    }

    /// The end of the SACKed range holding `s` (or `s` when not SACKed).
    pub fn sacked_end(&self, s: u32) -> u32 {
        self.b.range_of(s).map_or(s, |r| r.1)
    }

    /// RFC 6675 IsLost: at least `dup` SACKed ranges, or more than
    /// `(dup - 1) * mss` SACKed bytes, lie above `seq`.
    pub fn is_lost(&self, seq: u32, mss: u32, dup: u32) -> bool {
        let (mut bytes, mut blocks) = (0u32, 0u32);
        for x in self.b.iter().filter(|x| lt(seq, x.1)) {
            let start = if lt(x.0, seq) { seq } else { x.0 };
            bytes = bytes.saturating_add(x.1.wrapping_sub(start));
            if lt(seq, x.0) {
                blocks += 1;
            }
        }
        blocks >= dup || bytes > dup.saturating_sub(1).saturating_mul(mss)
    }

    /// The loss boundary: every unSACKed byte below it is lost by IsLost
    /// (the lost part of the holes is always a prefix). `una` when none is.
    fn loss_boundary(&self, una: u32, mss: u32) -> u32 {
        let (mut bytes, mut blocks) = (0u32, 0u32);
        let threshold = (crate::tcp::DUP_THRESH - 1) * mss;
        let ranges = &self.b.r[..self.b.len as usize];
        for x in ranges.iter().rev() {
            bytes = bytes.saturating_add(x.1.wrapping_sub(x.0));
            blocks += 1;
            if blocks >= crate::tcp::DUP_THRESH || bytes > threshold {
                return if lt(una, x.0) { x.0 } else { una };
            }
        }
        una
    }

    /// Unsacked bytes in `[from, to)`.
    fn unsacked(&self, from: u32, to: u32) -> u32 {
        if !lt(from, to) {
            return 0;
        }
        let mut n = to.wrapping_sub(from);
        for x in self.b.iter() {
            let s = if lt(x.0, from) { from } else { x.0 };
            let e = if lt(to, x.1) { to } else { x.1 };
            if lt(s, e) {
                n -= e.wrapping_sub(s);
            }
        }
        n
    }

    /// RFC 6675 SetPipe, in bytes: unSACKed data not deemed lost, plus lost
    /// data already retransmitted (below `high_rxt`).
    pub fn pipe(&self, una: u32, nxt: u32, high_rxt: u32, mss: u32) -> u32 {
        let l = self.loss_boundary(una, mss);
        let in_flight = self.unsacked(l, nxt);
        let rxt_end = if lt(high_rxt, l) { high_rxt } else { l };
        in_flight + self.unsacked(una, rxt_end)
    }

    /// RFC 6675 NextSeg rule 1: the first lost, unSACKed, not yet
    /// retransmitted range above `high_rxt`, at most one `mss` long.
    pub fn next_seg(&self, una: u32, nxt: u32, high_rxt: u32, mss: u32) -> Option<(u32, u32)> {
        let l = self.loss_boundary(una, mss);
        let mut s = if lt(una, high_rxt) { high_rxt } else { una };
        s = self.sacked_end(s);
        if !lt(s, l) || !lt(s, nxt) {
            return None;
        }
        let mut e = s.wrapping_add(mss);
        if let Some(ns) = self.b.next_start_after(s) {
            if lt(ns, e) {
                e = ns;
            }
        }
        if lt(nxt, e) {
            e = nxt;
        }
        Some((s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges<const N: usize>(r: &RangeSet<N>) -> Vec<(u32, u32)> {
        r.iter().collect()
    }

    #[test]
    fn insert_merges_and_orders() {
        let mut r = RangeSet::<4>::EMPTY;
        assert!(r.insert(30, 40));
        assert!(r.insert(10, 20));
        assert!(r.insert(50, 60));
        assert_eq!(ranges(&r), [(10, 20), (30, 40), (50, 60)]);
        assert!(r.insert(20, 30)); // touches both neighbours
        assert_eq!(ranges(&r), [(10, 40), (50, 60)]);
        assert!(r.insert(5, 70)); // swallows everything
        assert_eq!(ranges(&r), [(5, 70)]);
        assert!(r.insert(80, 80)); // empty: no change
        assert_eq!(ranges(&r), [(5, 70)]);
    }

    #[test]
    fn insert_beyond_capacity_drops_the_highest() {
        let mut r = RangeSet::<2>::EMPTY;
        assert!(r.insert(10, 20));
        assert!(r.insert(30, 40));
        assert!(!r.insert(50, 60));
        assert_eq!(ranges(&r), [(10, 20), (30, 40)]);
        assert!(!r.insert(0, 5));
        assert_eq!(ranges(&r), [(0, 5), (10, 20)]);
    }

    #[test]
    fn wraps_around_sequence_space() {
        let mut r = RangeSet::<4>::EMPTY;
        r.insert(u32::MAX - 10, 5);
        r.insert(10, 20);
        assert_eq!(ranges(&r), [(u32::MAX - 10, 5), (10, 20)]);
        assert!(r.contains(0) && r.contains(u32::MAX) && !r.contains(7));
        r.remove_below(2);
        assert_eq!(ranges(&r), [(2, 5), (10, 20)]);
        r.remove_below(12);
        assert_eq!(ranges(&r), [(12, 20)]);
        r.remove_below(20);
        assert!(r.is_empty());
    }

    #[test]
    fn sack_blocks_put_the_recent_first() {
        let mut r = RangeSet::<4>::EMPTY;
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(50, 60);
        let mut out = [(0, 0); 3];
        assert_eq!(r.sack_blocks(Some((32, 35)), &mut out), 3);
        assert_eq!(out, [(30, 40), (10, 20), (50, 60)]);
        let mut two = [(0, 0); 2];
        assert_eq!(r.sack_blocks(None, &mut two), 2);
        assert_eq!(two, [(10, 20), (30, 40)]);
    }

    #[test]
    fn scoreboard_loss_pipe_and_next_segment() {
        const MSS: u32 = 100;
        // Sent 0..1000; segments 1, 4 and 6..9 lost; the rest SACKed.
        let mut sb = SackScoreboard::EMPTY;
        let n = sb.update(0, 1000, &[(200, 400), (500, 600), (900, 1000), (0, 50)]);
        assert_eq!(n, 3, "a block at or below una is ignored");
        // Above 100: 3 blocks -> lost. Above 400: 200 bytes, 2 blocks -> not lost.
        assert!(sb.is_lost(100, MSS, 3));
        assert!(!sb.is_lost(400, MSS, 3));
        assert!(!sb.is_lost(600, MSS, 3));
        // Lost: [0, 200). In flight: 400..500 and 600..900 = 400.
        assert_eq!(sb.pipe(0, 1000, 0, MSS), 400);
        assert_eq!(sb.next_seg(0, 1000, 0, MSS), Some((0, 100)));
        assert_eq!(sb.next_seg(0, 1000, 100, MSS), Some((100, 200)));
        // After retransmitting both lost segments the pipe counts them.
        assert_eq!(sb.pipe(0, 1000, 200, MSS), 600);
        assert_eq!(
            sb.next_seg(0, 1000, 200, MSS),
            None,
            "400.. is not yet lost"
        );
        // More SACKs arrive: 400..500 is now lost too.
        sb.update(0, 1000, &[(600, 700)]);
        assert_eq!(ranges(&sb.b), [(200, 400), (500, 700), (900, 1000)]);
        assert_eq!(sb.next_seg(0, 1000, 200, MSS), Some((400, 500)));
        assert_eq!(sb.sacked_end(250), 400);
        assert_eq!(sb.sacked_end(450), 450);
        sb.on_cumulative_ack(700);
        assert_eq!(ranges(&sb.b), [(900, 1000)]);
    }
}
