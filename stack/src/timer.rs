//! The timer wheel: a hashed wheel living in the arena (slots and entries are
//! u32-linked tables), driven by the time the caller passes in, so tests run
//! on a virtual clock.
//!
//! Entry `id` is owned by whoever the stack's layout assigns it to (an ARP
//! entry, a socket's retransmit timer...). A timer due at `t` lands in slot
//! `(t / tick) % nslots`; entries more than a round ahead wait in their slot
//! until their round comes. [`TimerWheel::pop_expired`] is a pull API so the
//! caller can arm and cancel timers between firings.

/// End of a slot chain.
pub const TIMER_NONE: u32 = u32::MAX;

/// The wheel's header.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TimerWheelHdr {
    /// Length of one tick, ns.
    pub tick_ns: u64,
    /// Every slot for ticks before this one has been fully processed.
    pub cur_tick: u64,
    /// Number of slots (a power of two).
    pub nslots: u32,
    /// Timers currently armed.
    pub armed: u32,
}

/// One timer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TimerEntry {
    pub expires_ns: u64,
    pub next: u32,
    pub prev: u32,
    pub slot: u32,
    pub owner: u32,
    pub kind: u16,
    pub armed: u16,
    pub _pad: u32,
}

impl TimerEntry {
    const IDLE: TimerEntry = TimerEntry {
        expires_ns: 0,
        next: TIMER_NONE,
        prev: TIMER_NONE,
        slot: 0,
        owner: 0,
        kind: 0,
        armed: 0,
        _pad: 0,
    };
}

/// A timer that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub id: u32,
    pub kind: u16,
    pub owner: u32,
    pub expires_ns: u64,
}

/// Errors of the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("timer id {0} out of range")]
    BadId(u32),
}

/// A view of the wheel's tables.
pub struct TimerWheel<'a> {
    hdr: &'a mut TimerWheelHdr,
    slots: &'a mut [u32],
    entries: &'a mut [TimerEntry],
}

impl<'a> TimerWheel<'a> {
    /// Formats fresh memory: every slot empty, every timer idle.
    pub fn init(
        hdr: &'a mut TimerWheelHdr,
        slots: &'a mut [u32],
        entries: &'a mut [TimerEntry],
        tick_ns: u64,
        now_ns: u64,
    ) -> Self {
        let mut w = TimerWheel {
            hdr,
            slots,
            entries,
        };
        w.reset(tick_ns, now_ns);
        w
    }

    /// Attaches to already formatted memory.
    pub fn attach(
        hdr: &'a mut TimerWheelHdr,
        slots: &'a mut [u32],
        entries: &'a mut [TimerEntry],
    ) -> Self {
        TimerWheel {
            hdr,
            slots,
            entries,
        }
    }

    /// Re-formats: every timer idle.
    pub fn reset(&mut self, tick_ns: u64, now_ns: u64) {
        let tick_ns = tick_ns.max(1);
        self.slots.fill(TIMER_NONE);
        self.entries.fill(TimerEntry::IDLE);
        *self.hdr = TimerWheelHdr {
            tick_ns,
            cur_tick: now_ns / tick_ns,
            nslots: self.slots.len() as u32,
            armed: 0,
        };
    }

    fn slot_of(&self, tick: u64) -> u32 {
        (tick % u64::from(self.hdr.nslots.max(1))) as u32
    }

    fn unlink(&mut self, id: u32) {
        let e = self.entries[id as usize];
        if e.prev == TIMER_NONE {
            self.slots[e.slot as usize] = e.next;
        } else {
            self.entries[e.prev as usize].next = e.next;
        }
        if e.next != TIMER_NONE {
            self.entries[e.next as usize].prev = e.prev;
        }
        let x = &mut self.entries[id as usize];
        x.armed = 0;
        x.next = TIMER_NONE;
        x.prev = TIMER_NONE;
        self.hdr.armed = self.hdr.armed.saturating_sub(1);
    }

    /// Arms timer `id` to fire at `expires_ns` (re-arming moves it). A time in
    /// the past fires on the next [`TimerWheel::pop_expired`].
    pub fn arm(
        &mut self,
        id: u32,
        expires_ns: u64,
        kind: u16,
        owner: u32,
    ) -> Result<(), TimerError> {
        if id as usize >= self.entries.len() || self.slots.is_empty() {
            return Err(TimerError::BadId(id));
        }
        if self.entries[id as usize].armed != 0 {
            self.unlink(id);
        }
        let tick = (expires_ns / self.hdr.tick_ns).max(self.hdr.cur_tick);
        let slot = self.slot_of(tick);
        let head = self.slots[slot as usize];
        if head != TIMER_NONE {
            self.entries[head as usize].prev = id;
        }
        self.entries[id as usize] = TimerEntry {
            expires_ns,
            next: head,
            prev: TIMER_NONE,
            slot,
            owner,
            kind,
            armed: 1,
            _pad: 0,
        };
        self.slots[slot as usize] = id;
        self.hdr.armed += 1;
        Ok(())
    }

    /// Disarms timer `id` (no-op if idle or out of range).
    pub fn cancel(&mut self, id: u32) {
        if self.entries.get(id as usize).is_some_and(|e| e.armed != 0) {
            self.unlink(id);
        }
    }

    /// Whether timer `id` is armed.
    pub fn is_armed(&self, id: u32) -> bool {
        self.entries.get(id as usize).is_some_and(|e| e.armed != 0)
    }

    /// When timer `id` fires, if armed.
    pub fn expires(&self, id: u32) -> Option<u64> {
        self.entries
            .get(id as usize)
            .filter(|e| e.armed != 0)
            .map(|e| e.expires_ns)
    }

    /// Number of armed timers.
    pub fn armed_count(&self) -> u32 {
        self.hdr.armed
    }

    /// Takes one timer due at or before `now_ns`, disarming it.
    pub fn pop_expired(&mut self, now_ns: u64) -> Option<Fired> {
        if self.hdr.armed == 0 || self.slots.is_empty() {
            self.hdr.cur_tick = self.hdr.cur_tick.max(now_ns / self.hdr.tick_ns);
            return None;
        }
        let now_tick = now_ns / self.hdr.tick_ns;
        let n = u64::from(self.hdr.nslots);
        // After a long gap, one pass over every slot is enough.
        if now_tick > self.hdr.cur_tick + n {
            self.hdr.cur_tick = now_tick - n;
        }
        loop {
            let slot = self.slot_of(self.hdr.cur_tick);
            let mut cur = self.slots[slot as usize];
            while cur != TIMER_NONE {
                let e = self.entries[cur as usize];
                if e.expires_ns <= now_ns {
                    self.unlink(cur);
                    return Some(Fired {
                        id: cur,
                        kind: e.kind,
                        owner: e.owner,
                        expires_ns: e.expires_ns,
                    });
                }
                cur = e.next;
            }
            if self.hdr.cur_tick >= now_tick {
                return None;
            }
            self.hdr.cur_tick += 1;
        }
    }

    /// The earliest expiry of any armed timer.
    pub fn next_expiry(&self) -> Option<u64> {
        if self.hdr.armed == 0 {
            return None;
        }
        // Scan the slots in time order from the current tick; the first slot
        // holding a timer of the current round bounds the answer, but a later
        // round's timer may sit in an earlier slot, so take the minimum of all.
        let mut best: Option<u64> = None;
        for &head in self.slots.iter() {
            let mut cur = head;
            while cur != TIMER_NONE {
                let e = &self.entries[cur as usize];
                best = Some(best.map_or(e.expires_ns, |b: u64| b.min(e.expires_ns)));
                cur = e.next;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Mem {
        hdr: TimerWheelHdr,
        slots: Vec<u32>,
        entries: Vec<TimerEntry>,
    }

    fn mem(nslots: usize, n: usize) -> Mem {
        Mem {
            hdr: TimerWheelHdr::default(),
            slots: vec![0; nslots],
            entries: vec![TimerEntry::IDLE; n],
        }
    }

    fn wheel(m: &mut Mem, now: u64) -> TimerWheel<'_> {
        TimerWheel::init(&mut m.hdr, &mut m.slots, &mut m.entries, 1000, now)
    }

    fn drain(w: &mut TimerWheel<'_>, now: u64) -> Vec<u32> {
        let mut v = Vec::new();
        while let Some(f) = w.pop_expired(now) {
            assert!(f.expires_ns <= now, "fired early");
            v.push(f.id);
        }
        v.sort();
        v
    }

    #[test]
    fn fires_at_time_not_before() {
        let mut m = mem(8, 4);
        let mut w = wheel(&mut m, 0);
        w.arm(1, 5_500, 3, 77).unwrap();
        assert_eq!(w.pop_expired(5_499), None);
        assert_eq!(
            w.pop_expired(5_500),
            Some(Fired {
                id: 1,
                kind: 3,
                owner: 77,
                expires_ns: 5_500
            })
        );
        assert!(!w.is_armed(1));
        assert_eq!(w.armed_count(), 0);
    }

    #[test]
    fn cancel_rearm_and_past() {
        let mut m = mem(8, 4);
        let mut w = wheel(&mut m, 10_000);
        w.arm(0, 20_000, 0, 0).unwrap();
        w.arm(1, 20_000, 0, 0).unwrap();
        w.cancel(0);
        w.arm(1, 40_000, 0, 0).unwrap();
        assert_eq!(w.expires(1), Some(40_000));
        assert_eq!(drain(&mut w, 30_000), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 40_000), vec![1]);
        w.arm(2, 5, 0, 0).unwrap();
        assert_eq!(drain(&mut w, 40_000), vec![2], "a past time fires at once");
        assert_eq!(w.arm(9, 1, 0, 0), Err(TimerError::BadId(9)));
        w.cancel(9);
    }

    #[test]
    fn multi_round_and_long_gap() {
        let mut m = mem(4, 8);
        let mut w = wheel(&mut m, 0);
        w.arm(0, 1_000, 0, 0).unwrap();
        w.arm(1, 5_000, 0, 0).unwrap(); // same slot, next round
        w.arm(2, 1_000_000, 0, 0).unwrap();
        assert_eq!(drain(&mut w, 1_000), vec![0]);
        assert_eq!(drain(&mut w, 4_999), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 5_000), vec![1]);
        assert_eq!(w.next_expiry(), Some(1_000_000));
        assert_eq!(drain(&mut w, 10_000_000), vec![2]);
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn rearm_inside_pop_loop() {
        let mut m = mem(8, 2);
        let mut w = wheel(&mut m, 0);
        w.arm(0, 1_000, 0, 0).unwrap();
        let mut fired = 0;
        let mut now = 0;
        while now < 10_000 {
            now += 500;
            while let Some(f) = w.pop_expired(now) {
                fired += 1;
                w.arm(f.id, now + 1_000, 0, 0).unwrap();
            }
        }
        assert_eq!(fired, 10, "at 1000, 2000, ... 10000");
    }

    #[test]
    fn differential_against_reference() {
        let mut m = mem(16, 64);
        let mut w = wheel(&mut m, 0);
        let mut reference: BTreeMap<u32, u64> = BTreeMap::new();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 0u64;
        for _ in 0..20_000 {
            match rnd() % 4 {
                0 | 1 => {
                    let id = (rnd() % 64) as u32;
                    let at = now.saturating_sub(2_000) + rnd() % 60_000;
                    w.arm(id, at, 0, id).unwrap();
                    reference.insert(id, at);
                }
                2 => {
                    let id = (rnd() % 64) as u32;
                    w.cancel(id);
                    reference.remove(&id);
                }
                _ => {
                    now += if rnd() % 50 == 0 {
                        rnd() % 200_000
                    } else {
                        rnd() % 3_000
                    };
                    let got = drain(&mut w, now);
                    let want: Vec<u32> = reference
                        .iter()
                        .filter(|(_, &t)| t <= now)
                        .map(|(&i, _)| i)
                        .collect();
                    assert_eq!(got, want, "at {now}");
                    reference.retain(|_, t| *t > now);
                    assert_eq!(w.armed_count() as usize, reference.len());
                    assert_eq!(w.next_expiry(), reference.values().min().copied());
                }
            }
        }
    }
}
