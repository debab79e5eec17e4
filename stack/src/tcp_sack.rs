//! Stand-in (replaced by the full module).
fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
fn le(a: u32, b: u32) -> bool {
    !lt(b, a)
}
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSet<const N: usize> {
    r: [(u32, u32); N],
    len: u32,
}
impl<const N: usize> RangeSet<N> {
    pub const EMPTY: Self = RangeSet {
        r: [(0, 0); N],
        len: 0,
    };
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.r[..self.len as usize].iter().copied()
    }
    pub fn insert(&mut self, s: u32, e: u32) -> bool {
        let mut v: Vec<(u32, u32)> = self.iter().collect();
        v.push((s, e));
        v.sort_by(|a, b| {
            if lt(a.0, b.0) {
                std::cmp::Ordering::Less
            } else if a.0 == b.0 {
                std::cmp::Ordering::Equal
            } else {
                std::cmp::Ordering::Greater
            }
        });
        let mut out: Vec<(u32, u32)> = Vec::new();
        for x in v {
            if let Some(l) = out.last_mut() {
                if le(x.0, l.1) {
                    if lt(l.1, x.1) {
                        l.1 = x.1;
                    }
                    continue;
                }
            }
            out.push(x);
        }
        let ok = out.len() <= N;
        out.truncate(N);
        self.len = out.len() as u32;
        for (k, x) in out.into_iter().enumerate() {
            self.r[k] = x;
        }
        ok
    }
    pub fn remove_below(&mut self, seq: u32) {
        let v: Vec<(u32, u32)> = self
            .iter()
            .filter(|x| lt(seq, x.1))
            .map(|x| (if lt(x.0, seq) { seq } else { x.0 }, x.1))
            .collect();
        self.len = v.len() as u32;
        for (k, x) in v.into_iter().enumerate() {
            self.r[k] = x;
        }
    }
    pub fn contains(&self, s: u32) -> bool {
        self.iter().any(|x| le(x.0, s) && lt(s, x.1))
    }
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
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SackScoreboard {
    b: RangeSet<8>,
}
impl SackScoreboard {
    pub const EMPTY: Self = SackScoreboard { b: RangeSet::EMPTY };
    pub fn update(&mut self, una: u32, nxt: u32, blocks: &[(u32, u32)]) -> u32 {
        for &(s, e) in blocks {
            if lt(una, s) && le(e, nxt) && lt(s, e) {
                self.b.insert(s, e);
            }
        }
        0
    }
    pub fn on_cumulative_ack(&mut self, una: u32) {
        self.b.remove_below(una);
    }
    pub fn is_sacked(&self, s: u32) -> bool {
        self.b.contains(s)
    }
    pub fn is_lost(&self, seq: u32, mss: u32, dup: u32) -> bool {
        let above: u32 = self
            .b
            .iter()
            .filter(|x| lt(seq, x.1))
            .map(|x| x.1.wrapping_sub(if lt(x.0, seq) { seq } else { x.0 }))
            .sum();
        above > (dup - 1) * mss
    }
    pub fn pipe(&self, una: u32, nxt: u32, _hr: u32, _mss: u32) -> u32 {
        let sacked: u32 = self.b.iter().map(|x| x.1.wrapping_sub(x.0)).sum();
        nxt.wrapping_sub(una).saturating_sub(sacked)
    }
    pub fn next_seg(&self, una: u32, nxt: u32, hr: u32, mss: u32) -> Option<(u32, u32)> {
        let mut s = if lt(una, hr) { hr } else { una };
        while lt(s, nxt) {
            if self.is_sacked(s) {
                s = s.wrapping_add(1);
                continue;
            }
            if !self.is_lost(s, mss, 3) {
                return None;
            }
            let mut e = s;
            while lt(e, nxt) && !self.is_sacked(e) && e.wrapping_sub(s) < mss {
                e = e.wrapping_add(1);
            }
            return Some((s, e));
        }
        None
    }
}
