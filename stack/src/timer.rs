//! Hashed timer wheel living in the shared-memory arena.
//!
//! Every protocol timer (retransmit, ARP aging, delayed ACK, ...) is a
//! [`TimerEntry`] identified by a `u32` index. Entries hang off `nslots`
//! buckets as doubly linked lists of indices, so the whole structure is plain
//! `#[repr(C)]` data that any process mapping the arena can read. The wheel is
//! sans-IO: the current time (nanoseconds) is always passed in, so tests drive
//! it with a virtual clock.
//!
//! Layout: an entry expiring at `e` lives in slot `(e / tick_ns) % nslots`.
//! The cursor `hdr.cur_tick` is the first tick that has not been fully
//! processed yet; every tick before it has been drained. A timer armed for a
//! tick before the cursor (i.e. in the past) is put in the cursor's slot so
//! the very next [`TimerWheel::pop_expired`] sees it. Entries more than one
//! round ahead share a slot with nearer ones and are skipped until due, since
//! every firing decision compares the entry's own `expires_ns` with `now`.

use thiserror::Error;

/// End-of-list / "no entry" marker for the slot heads and entry links.
pub const TIMER_NONE: u32 = u32::MAX;

/// Errors from [`TimerWheel`] operations, so callers never hit a panic on a
/// bad index coming from (possibly corrupt) shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TimerError {
    /// The timer id is not an index into the entry table.
    #[error("timer id {0} out of range")]
    BadId(u32),
    /// The wheel has no slots, so nothing can ever be armed.
    #[error("timer wheel has no slots")]
    NoSlots,
}

/// Wheel-wide state stored in the arena, shared by all attachers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerWheelHdr {
    /// Width of one slot in nanoseconds (never 0 after `init`).
    pub tick_ns: u64,
    /// Cursor: first tick not yet fully processed; all earlier ticks are drained.
    pub cur_tick: u64,
    /// Number of slots (copy of the slot array length, for inspection tools).
    pub nslots: u32,
    /// Number of currently armed entries.
    pub armed: u32,
}

/// One timer, stored in the arena's entry table and linked into a slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    /// Absolute expiry time in nanoseconds.
    pub expires_ns: u64,
    /// Next entry in the same slot, or [`TIMER_NONE`].
    pub next: u32,
    /// Previous entry in the same slot, or [`TIMER_NONE`] if this is the head.
    pub prev: u32,
    /// Slot this entry is linked into (valid only while armed).
    pub slot: u32,
    /// Opaque owner handle (e.g. socket index) handed back when it fires.
    pub owner: u32,
    /// Opaque timer kind handed back when it fires.
    pub kind: u16,
    /// 1 while linked into the wheel, 0 otherwise.
    pub armed: u16,
    /// Explicit padding so the layout is identical everywhere.
    pub _pad: u32,
}

impl TimerEntry {
    /// A disarmed, unlinked entry: the state fresh memory is initialised to.
    pub const DISARMED: TimerEntry = TimerEntry {
        expires_ns: 0,
        next: TIMER_NONE,
        prev: TIMER_NONE,
        slot: TIMER_NONE,
        owner: 0,
        kind: 0,
        armed: 0,
        _pad: 0,
    };
}

impl Default for TimerEntry {
    fn default() -> Self {
        Self::DISARMED
    }
}

/// A timer that has expired and been disarmed by [`TimerWheel::pop_expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// Index of the entry that fired.
    pub id: u32,
    /// Kind given when it was armed.
    pub kind: u16,
    /// Owner given when it was armed.
    pub owner: u32,
    /// Expiry it was armed with.
    pub expires_ns: u64,
}

/// A view over the wheel's arena memory; cheap to create, holds no state of
/// its own, so any process can attach to the same wheel.
pub struct TimerWheel<'a> {
    hdr: &'a mut TimerWheelHdr,
    slots: &'a mut [u32],
    entries: &'a mut [TimerEntry],
}

impl<'a> TimerWheel<'a> {
    /// Initialise fresh memory (all slots empty, all entries disarmed) with
    /// the cursor at `now_ns`. `slots.len()` should be a power of two (any
    /// non-zero length works); a `tick_ns` of 0 is treated as 1.
    pub fn init(
        hdr: &'a mut TimerWheelHdr,
        slots: &'a mut [u32],
        entries: &'a mut [TimerEntry],
        tick_ns: u64,
        now_ns: u64,
    ) -> Self {
        let tick_ns = tick_ns.max(1);
        *hdr = TimerWheelHdr {
            tick_ns,
            cur_tick: now_ns / tick_ns,
            nslots: u32::try_from(slots.len()).unwrap_or(u32::MAX),
            armed: 0,
        };
        slots.fill(TIMER_NONE);
        entries.fill(TimerEntry::DISARMED);
        Self {
            hdr,
            slots,
            entries,
        }
    }

    /// Re-initialise the memory this view covers (every timer disarmed).
    pub fn reset(&mut self, tick_ns: u64, now_ns: u64) {
        let tick_ns = tick_ns.max(1);
        *self.hdr = TimerWheelHdr {
            tick_ns,
            cur_tick: now_ns / tick_ns,
            nslots: u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
            armed: 0,
        };
        self.slots.fill(TIMER_NONE);
        self.entries.fill(TimerEntry::DISARMED);
    }

    /// Attach to memory already set up by [`TimerWheel::init`] (e.g. by
    /// another process sharing the arena).
    pub fn attach(
        hdr: &'a mut TimerWheelHdr,
        slots: &'a mut [u32],
        entries: &'a mut [TimerEntry],
    ) -> Self {
        Self {
            hdr,
            slots,
            entries,
        }
    }

    fn tick_ns(&self) -> u64 {
        self.hdr.tick_ns.max(1)
    }

    /// Arm timer `id` to expire at `expires_ns`; re-arming an armed timer
    /// moves it. An expiry in the past fires on the next `pop_expired`.
    pub fn arm(
        &mut self,
        id: u32,
        expires_ns: u64,
        kind: u16,
        owner: u32,
    ) -> Result<(), TimerError> {
        let idx = self.index(id).ok_or(TimerError::BadId(id))?;
        let nslots = self.slots.len() as u64;
        if nslots == 0 {
            return Err(TimerError::NoSlots);
        }
        let was_armed = self.entries[idx].armed != 0;
        if was_armed {
            self.unlink(id);
        }
        // Past ticks are already drained; park overdue timers at the cursor.
        let tick = (expires_ns / self.tick_ns()).max(self.hdr.cur_tick);
        let slot = (tick % nslots) as usize;
        let old_head = self.slots[slot];
        self.entries[idx] = TimerEntry {
            expires_ns,
            next: old_head,
            prev: TIMER_NONE,
            slot: slot as u32,
            owner,
            kind,
            armed: 1,
            _pad: 0,
        };
        if let Some(h) = self.index(old_head) {
            self.entries[h].prev = id;
        }
        self.slots[slot] = id;
        if !was_armed {
            self.hdr.armed = self.hdr.armed.saturating_add(1);
        }
        Ok(())
    }

    /// Disarm timer `id`; a no-op if it is not armed or `id` is out of range.
    pub fn cancel(&mut self, id: u32) {
        if self.is_armed(id) {
            self.unlink(id);
            self.disarm(id);
        }
    }

    /// Whether timer `id` is currently armed (false for a bad id).
    pub fn is_armed(&self, id: u32) -> bool {
        self.entry(id).is_some_and(|e| e.armed != 0)
    }

    /// Expiry of timer `id` if it is armed.
    pub fn expires(&self, id: u32) -> Option<u64> {
        self.entry(id)
            .filter(|e| e.armed != 0)
            .map(|e| e.expires_ns)
    }

    /// Number of armed timers.
    pub fn armed_count(&self) -> u32 {
        self.hdr.armed
    }

    /// Pop one expired timer (`expires_ns <= now_ns`), disarming it. The
    /// caller loops `while let Some(f) = wheel.pop_expired(now)` and may
    /// arm/cancel other or the same timers between calls (re-entrancy is why
    /// this is not a callback API). Within a slot the earliest expiry fires
    /// first. A full drain visits each slot at most once, even after a long
    /// idle gap.
    pub fn pop_expired(&mut self, now_ns: u64) -> Option<Fired> {
        let now_tick = now_ns / self.tick_ns();
        if self.hdr.armed == 0 {
            // Nothing to fire: every tick before now is trivially drained.
            self.hdr.cur_tick = self.hdr.cur_tick.max(now_tick);
            return None;
        }
        let nslots = self.slots.len() as u64;
        if nslots == 0 {
            return None;
        }
        // Ticks congruent mod nslots share a slot and every decision compares
        // the entry's own expiry with `now`, so draining the last `nslots`
        // ticks also drains everything older.
        if now_tick > self.hdr.cur_tick && now_tick - self.hdr.cur_tick >= nslots {
            self.hdr.cur_tick = now_tick - nslots + 1;
        }
        loop {
            let slot = (self.hdr.cur_tick % nslots) as usize;
            if let Some(id) = self.earliest_due_in_slot(slot, now_ns) {
                let e = self.entries.get(id as usize).copied()?;
                self.unlink(id);
                self.disarm(id);
                return Some(Fired {
                    id,
                    kind: e.kind,
                    owner: e.owner,
                    expires_ns: e.expires_ns,
                });
            }
            if self.hdr.cur_tick < now_tick {
                self.hdr.cur_tick += 1;
            } else {
                return None;
            }
        }
    }

    /// Earliest expiry of any armed timer, for deciding how long the stack may
    /// sleep. Walks every slot: O(slots + armed).
    pub fn next_expiry(&self) -> Option<u64> {
        if self.hdr.armed == 0 {
            return None;
        }
        let mut best: Option<u64> = None;
        for slot in 0..self.slots.len() {
            self.walk_slot(slot, |_, e| {
                if best.is_none_or(|b| e.expires_ns < b) {
                    best = Some(e.expires_ns);
                }
            });
        }
        best
    }

    /// Index into `entries` for `id`, if in range.
    fn index(&self, id: u32) -> Option<usize> {
        if id == TIMER_NONE {
            return None;
        }
        let idx = id as usize;
        (idx < self.entries.len()).then_some(idx)
    }

    fn entry(&self, id: u32) -> Option<&TimerEntry> {
        self.index(id).map(|i| &self.entries[i])
    }

    /// Visit the armed entries of `slot`, bounded by the table size so a
    /// corrupted (cyclic) list in shared memory cannot hang the stack.
    fn walk_slot(&self, slot: usize, mut f: impl FnMut(u32, &TimerEntry)) {
        let mut cur = self.slots.get(slot).copied().unwrap_or(TIMER_NONE);
        for _ in 0..self.entries.len() {
            let Some(e) = self.entry(cur) else { break };
            if e.armed != 0 {
                f(cur, e);
            }
            cur = e.next;
        }
    }

    fn earliest_due_in_slot(&self, slot: usize, now_ns: u64) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        self.walk_slot(slot, |id, e| {
            if e.expires_ns <= now_ns && best.is_none_or(|(b, _)| e.expires_ns < b) {
                best = Some((e.expires_ns, id));
            }
        });
        best.map(|(_, id)| id)
    }

    /// Remove `id` from its slot list (does not touch `armed`).
    fn unlink(&mut self, id: u32) {
        let Some(idx) = self.index(id) else { return };
        let TimerEntry {
            next, prev, slot, ..
        } = self.entries[idx];
        match self.index(prev) {
            Some(p) => self.entries[p].next = next,
            None => {
                if let Some(head) = self.slots.get_mut(slot as usize) {
                    if *head == id {
                        *head = next;
                    }
                }
            }
        }
        if let Some(n) = self.index(next) {
            self.entries[n].prev = prev;
        }
        let e = &mut self.entries[idx];
        e.next = TIMER_NONE;
        e.prev = TIMER_NONE;
        e.slot = TIMER_NONE;
    }

    /// Mark an already-unlinked entry disarmed and keep the count accurate.
    fn disarm(&mut self, id: u32) {
        let Some(idx) = self.index(id) else { return };
        if self.entries[idx].armed != 0 {
            self.entries[idx].armed = 0;
            self.hdr.armed = self.hdr.armed.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 100;

    /// Owned stand-in for the arena memory.
    struct Mem {
        hdr: TimerWheelHdr,
        slots: Vec<u32>,
        entries: Vec<TimerEntry>,
    }

    impl Mem {
        fn new(nslots: usize, nentries: usize) -> Self {
            Mem {
                hdr: TimerWheelHdr::default(),
                slots: vec![0xdead; nslots],
                entries: vec![TimerEntry::default(); nentries],
            }
        }
        fn init(&mut self, now: u64) -> TimerWheel<'_> {
            TimerWheel::init(&mut self.hdr, &mut self.slots, &mut self.entries, TICK, now)
        }
        fn attach(&mut self) -> TimerWheel<'_> {
            TimerWheel::attach(&mut self.hdr, &mut self.slots, &mut self.entries)
        }
    }

    fn drain(w: &mut TimerWheel<'_>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(f) = w.pop_expired(now) {
            assert!(f.expires_ns <= now, "fired early: {f:?} at {now}");
            out.push(f.id);
        }
        out
    }

    #[test]
    fn fires_at_exact_time_not_before() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(1_000);
        w.arm(2, 1_234, 7, 99).unwrap();
        assert!(w.is_armed(2));
        assert_eq!(w.expires(2), Some(1_234));
        assert_eq!(w.armed_count(), 1);
        assert_eq!(w.pop_expired(1_000), None);
        assert_eq!(w.pop_expired(1_200), None);
        assert_eq!(w.pop_expired(1_233), None);
        assert_eq!(
            w.pop_expired(1_234),
            Some(Fired {
                id: 2,
                kind: 7,
                owner: 99,
                expires_ns: 1_234
            })
        );
        assert!(!w.is_armed(2));
        assert_eq!(w.expires(2), None);
        assert_eq!(w.armed_count(), 0);
        assert_eq!(w.pop_expired(5_000), None);
    }

    #[test]
    fn fires_within_the_init_tick() {
        let mut m = Mem::new(8, 2);
        let mut w = m.init(0);
        w.arm(0, 5, 0, 0).unwrap();
        assert_eq!(w.pop_expired(4), None);
        assert_eq!(w.pop_expired(5).map(|f| f.id), Some(0));
    }

    #[test]
    fn cancel_disarms() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        w.arm(0, 300, 0, 0).unwrap();
        w.arm(1, 300, 0, 0).unwrap();
        w.arm(3, 300, 0, 0).unwrap();
        w.cancel(1);
        w.cancel(1); // not armed: no-op
        w.cancel(2); // never armed: no-op
        w.cancel(1_000); // bad id: no-op
        w.cancel(TIMER_NONE);
        assert_eq!(w.armed_count(), 2);
        let mut fired = drain(&mut w, 300);
        fired.sort_unstable();
        assert_eq!(fired, vec![0, 3]);
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn rearm_moves() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        w.arm(1, 200, 1, 1).unwrap();
        w.arm(1, 950, 2, 3).unwrap();
        assert_eq!(w.armed_count(), 1);
        assert_eq!(w.expires(1), Some(950));
        assert!(drain(&mut w, 900).is_empty());
        let f = w.pop_expired(950).unwrap();
        assert_eq!((f.id, f.kind, f.owner, f.expires_ns), (1, 2, 3, 950));
        // Move earlier, too.
        w.arm(1, 5_000, 0, 0).unwrap();
        w.arm(1, 1_000, 0, 0).unwrap();
        assert_eq!(drain(&mut w, 1_000), vec![1]);
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn many_timers_across_rounds() {
        // 8 slots * 100ns = 800ns per round; spread over ~6 rounds.
        let mut m = Mem::new(8, 64);
        let mut w = m.init(0);
        for id in 0..64u32 {
            w.arm(id, 50 + u64::from(id) * 75, 0, id).unwrap();
        }
        let mut seen = Vec::new();
        let mut now = 0;
        while now <= 6_000 {
            for id in drain(&mut w, now) {
                let exp = 50 + u64::from(id) * 75;
                // Stepping by 10ns, so it must fire within one step of due.
                assert!(exp <= now && now < exp + 10, "id {id} at {now}");
                seen.push(id);
            }
            now += 10;
        }
        assert_eq!(seen, (0..64).collect::<Vec<_>>());
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn earlier_expiry_first_within_slot() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        w.arm(0, 190, 0, 0).unwrap();
        w.arm(1, 110, 0, 0).unwrap();
        w.arm(2, 150, 0, 0).unwrap();
        assert_eq!(drain(&mut w, 200), vec![1, 2, 0]);
    }

    #[test]
    fn long_idle_gap() {
        let mut m = Mem::new(8, 16);
        let mut w = m.init(0);
        w.arm(0, 150, 0, 0).unwrap();
        w.arm(1, 10_000, 0, 0).unwrap();
        w.arm(2, 1_000_000, 0, 0).unwrap();
        w.arm(3, 1_000_001, 0, 0).unwrap();
        w.arm(4, u64::MAX, 0, 0).unwrap();
        let mut fired = drain(&mut w, 1_000_000);
        fired.sort_unstable();
        assert_eq!(fired, vec![0, 1, 2]);
        // The cursor caught up instead of stepping one tick per call.
        assert!(m.hdr.cur_tick >= 1_000_000 / TICK - 8);
        let mut w = m.attach();
        assert_eq!(w.pop_expired(1_000_000), None);
        assert_eq!(drain(&mut w, 1_000_001), vec![3]);
        assert_eq!(w.next_expiry(), Some(u64::MAX));
        // A gap of u64 range does not hang or overflow.
        assert_eq!(drain(&mut w, u64::MAX), vec![4]);
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn idle_gap_without_timers_advances_cursor() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        assert_eq!(w.pop_expired(123_456), None);
        w.arm(0, 123_500, 0, 0).unwrap();
        assert_eq!(w.pop_expired(123_499), None);
        assert_eq!(drain(&mut w, 123_500), vec![0]);
    }

    #[test]
    fn arming_in_the_past_fires_immediately() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        assert!(drain(&mut w, 10_000).is_empty());
        w.arm(0, 50, 0, 0).unwrap(); // many rounds ago
        w.arm(1, 9_999, 0, 0).unwrap(); // previous tick
        w.arm(2, 10_000, 0, 0).unwrap(); // exactly now
        w.arm(3, 10_001, 0, 0).unwrap(); // future, same tick
        assert_eq!(w.next_expiry(), Some(50));
        let mut fired = drain(&mut w, 10_000);
        fired.sort_unstable();
        assert_eq!(fired, vec![0, 1, 2]);
        assert_eq!(drain(&mut w, 10_001), vec![3]);
    }

    #[test]
    fn rearm_from_inside_pop_loop() {
        let mut m = Mem::new(8, 8);
        let mut w = m.init(0);
        w.arm(0, 100, 0, 0).unwrap();
        w.arm(1, 150, 0, 0).unwrap();
        w.arm(2, 160, 0, 0).unwrap();
        let now = 200;
        let mut fired = Vec::new();
        while let Some(f) = w.pop_expired(now) {
            fired.push(f.id);
            match f.id {
                // Periodic re-arm of itself into the future: must not refire now.
                0 => w.arm(0, now + 1_000, 0, 0).unwrap(),
                // Cancel a sibling that is also due.
                1 => w.cancel(2),
                _ => {}
            }
            if fired.len() == 1 {
                // Arm a new one that is already due: fires in this same loop.
                w.arm(5, 20, 0, 0).unwrap();
            }
        }
        fired.sort_unstable();
        assert!(
            fired == vec![0, 1, 5] || fired == vec![0, 1, 2, 5],
            "{fired:?}"
        );
        assert!(!w.is_armed(2));
        assert_eq!(w.expires(0), Some(1_200));
        assert_eq!(w.armed_count(), 1);
        assert!(drain(&mut w, 1_199).is_empty());
        assert_eq!(drain(&mut w, 1_200), vec![0]);
    }

    #[test]
    fn next_expiry_is_minimum() {
        let mut m = Mem::new(8, 8);
        let mut w = m.init(0);
        assert_eq!(w.next_expiry(), None);
        w.arm(0, 5_000, 0, 0).unwrap(); // several rounds ahead, slot 2
        assert_eq!(w.next_expiry(), Some(5_000));
        w.arm(1, 750, 0, 0).unwrap(); // later slot, earlier round
        assert_eq!(w.next_expiry(), Some(750));
        w.arm(2, 260, 0, 0).unwrap(); // same slot as id 0, earlier round
        assert_eq!(w.next_expiry(), Some(260));
        w.cancel(2);
        assert_eq!(w.next_expiry(), Some(750));
        assert_eq!(drain(&mut w, 1_000), vec![1]);
        assert_eq!(w.next_expiry(), Some(5_000));
    }

    #[test]
    fn bad_id_is_an_error() {
        let mut m = Mem::new(8, 4);
        let mut w = m.init(0);
        assert_eq!(w.arm(4, 10, 0, 0), Err(TimerError::BadId(4)));
        assert_eq!(
            w.arm(TIMER_NONE, 10, 0, 0),
            Err(TimerError::BadId(TIMER_NONE))
        );
        assert!(!w.is_armed(4));
        assert_eq!(w.expires(4), None);
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn degenerate_memory_does_not_panic() {
        let mut hdr = TimerWheelHdr::default();
        let mut slots: [u32; 0] = [];
        let mut entries = [TimerEntry::default(); 2];
        let mut w = TimerWheel::init(&mut hdr, &mut slots, &mut entries, 0, 7);
        assert_eq!(w.arm(0, 10, 0, 0), Err(TimerError::NoSlots));
        assert_eq!(w.pop_expired(100), None);
        assert_eq!(w.next_expiry(), None);

        // A corrupted cyclic list and garbage header must not hang or panic.
        let mut hdr = TimerWheelHdr {
            tick_ns: 0,
            cur_tick: 3,
            nslots: 99,
            armed: 5,
        };
        let mut slots = [0u32, 77, TIMER_NONE, 1];
        let mut entries = [TimerEntry {
            next: 0,
            prev: 0,
            armed: 1,
            slot: 0,
            expires_ns: 1_000,
            ..TimerEntry::DISARMED
        }; 2];
        let mut w = TimerWheel::attach(&mut hdr, &mut slots, &mut entries);
        assert_eq!(w.next_expiry(), Some(1_000));
        let _ = w.pop_expired(10);
        let _ = w.pop_expired(u64::MAX);
        w.cancel(1);
        let _ = w.arm(0, 5, 0, 0);
        let _ = w.pop_expired(u64::MAX);
    }

    /// Tiny deterministic xorshift64* PRNG.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_expiry(rng: &mut Rng, now: u64, round: u64) -> u64 {
        match rng.below(10) {
            0 => now.saturating_sub(rng.below(3 * round)), // past
            1 => now,
            2..=5 => now + rng.below(2 * TICK),  // near
            6..=8 => now + rng.below(3 * round), // a few rounds
            _ => now + rng.below(50 * round),    // far
        }
    }

    fn differential(seed: u64, nslots: usize, nentries: usize, steps: usize) -> usize {
        let round = nslots as u64 * TICK;
        let mut rng = Rng(seed);
        let mut m = Mem::new(nslots, nentries);
        let mut now = rng.below(10_000);
        m.init(now);
        let mut model: Vec<Option<u64>> = vec![None; nentries];
        let mut fired = 0;

        for step in 0..steps {
            // Re-attach every step: all state must live in the "arena".
            let mut w = m.attach();
            match rng.below(10) {
                0..=3 => {
                    let id = rng.below(nentries as u64) as u32;
                    let exp = random_expiry(&mut rng, now, round);
                    w.arm(id, exp, (id % 7) as u16, id * 3).unwrap();
                    model[id as usize] = Some(exp);
                }
                4 => {
                    let id = rng.below(nentries as u64 + 2) as u32;
                    w.cancel(id);
                    if let Some(slot) = model.get_mut(id as usize) {
                        *slot = None;
                    }
                }
                _ => {
                    now += match rng.below(10) {
                        0 => 0,
                        1..=4 => rng.below(TICK),
                        5..=7 => rng.below(round),
                        8 => round + rng.below(5 * round), // past-round gap
                        _ => rng.below(100 * round),
                    };
                    let rearm_inside = rng.below(3) == 0;
                    while let Some(f) = w.pop_expired(now) {
                        let id = f.id as usize;
                        assert_eq!(
                            model[id],
                            Some(f.expires_ns),
                            "step {step}: fired {f:?} not armed like that in model"
                        );
                        assert!(f.expires_ns <= now, "step {step}: early {f:?} now {now}");
                        assert_eq!((f.kind, f.owner), ((f.id % 7) as u16, f.id * 3));
                        model[id] = None;
                        fired += 1;
                        if rearm_inside {
                            // Re-entrant mutation while draining.
                            let id2 = rng.below(nentries as u64) as u32;
                            if rng.below(2) == 0 {
                                let exp = random_expiry(&mut rng, now, round);
                                w.arm(id2, exp, (id2 % 7) as u16, id2 * 3).unwrap();
                                model[id2 as usize] = Some(exp);
                            } else {
                                w.cancel(id2);
                                model[id2 as usize] = None;
                            }
                        }
                    }
                    // Everything due has fired.
                    for (id, e) in model.iter().enumerate() {
                        if let Some(e) = e {
                            assert!(*e > now, "step {step}: id {id} due {e} not fired by {now}");
                        }
                    }
                }
            }
            let armed = model.iter().flatten().count() as u32;
            assert_eq!(w.armed_count(), armed, "step {step}");
            assert_eq!(w.next_expiry(), model.iter().flatten().min().copied());
            for (id, e) in model.iter().enumerate() {
                assert_eq!(w.expires(id as u32), *e, "step {step} id {id}");
            }
        }
        fired
    }

    #[test]
    fn differential_against_reference_model() {
        // Each run must actually exercise firing, not just pass vacuously.
        assert!(differential(0x9e37_79b9_7f4a_7c15, 8, 32, 20_000) > 2_000);
        assert!(differential(0x0123_4567_89ab_cdef, 16, 64, 20_000) > 2_000);
        assert!(differential(42, 1, 8, 5_000) > 500);
        assert!(differential(7, 64, 200, 10_000) > 1_000);
    }
}
