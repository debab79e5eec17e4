//! TCP sequence numbers (RFC 9293 section 3.4): 32-bit values compared
//! modulo 2^32 (RFC 1982 serial-number arithmetic).
//!
//! `SeqNum` deliberately does not implement `PartialOrd`/`Ord`: modular
//! comparison is not transitive, so sorting or `BTreeMap` keys would be
//! wrong. Use [`SeqNum::lt`] and friends, which are only meaningful for
//! numbers less than 2^31 apart.

use core::fmt;
use core::ops::{Add, Sub};

/// A TCP sequence (or acknowledgment) number; a newtype so plain `u32`
/// arithmetic and ordering cannot be applied by mistake across the wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// Signed distance `self - other`, the basis of every modular comparison.
    /// Exactly 2^31 apart gives `i32::MIN` (RFC 1982: undefined order).
    #[inline]
    pub fn diff(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Modular `self < other`.
    #[inline]
    pub fn lt(self, other: SeqNum) -> bool {
        self.diff(other) < 0
    }

    /// Modular `self <= other`.
    #[inline]
    pub fn le(self, other: SeqNum) -> bool {
        self.diff(other) <= 0
    }

    /// Modular `self > other`.
    #[inline]
    pub fn gt(self, other: SeqNum) -> bool {
        self.diff(other) > 0
    }

    /// Modular `self >= other`.
    #[inline]
    pub fn ge(self, other: SeqNum) -> bool {
        self.diff(other) >= 0
    }

    /// Advances by `n` bytes of sequence space, wrapping at 2^32
    /// (only the low 32 bits of `n` matter).
    #[allow(clippy::should_implement_trait)] // `Add<usize>` is implemented too.
    #[inline]
    pub fn add(self, n: usize) -> SeqNum {
        SeqNum(self.0.wrapping_add(n as u32))
    }

    /// The later of two numbers in modular order (e.g. the highest ACK seen).
    #[inline]
    pub fn max(self, other: SeqNum) -> SeqNum {
        if self.lt(other) {
            other
        } else {
            self
        }
    }

    /// The earlier of two numbers in modular order.
    #[inline]
    pub fn min(self, other: SeqNum) -> SeqNum {
        if self.lt(other) {
            self
        } else {
            other
        }
    }

    /// Whether `start <= self < end` in modular order, i.e. whether `self`
    /// lies in the half-open window that starts at `start` (window checks
    /// of RFC 9293 section 3.10.7.4). Computed as forward distances, so it
    /// is exact for any window shorter than 2^32; `start == end` is empty.
    #[inline]
    pub fn in_range(self, start: SeqNum, end: SeqNum) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }
}

impl Add<usize> for SeqNum {
    type Output = SeqNum;

    /// Wrapping advance, same as [`SeqNum::add`].
    #[inline]
    fn add(self, n: usize) -> SeqNum {
        SeqNum(self.0.wrapping_add(n as u32))
    }
}

impl Sub<usize> for SeqNum {
    type Output = SeqNum;

    /// Wrapping step back by `n` (only the low 32 bits of `n` matter).
    #[inline]
    fn sub(self, n: usize) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n as u32))
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = usize;

    /// Forward distance from `other` to `self` (`0..2^32`); never panics:
    /// if `self` is modularly before `other` the result wraps to a large value,
    /// so callers should check `ge` first where that matters.
    #[inline]
    fn sub(self, other: SeqNum) -> usize {
        self.0.wrapping_sub(other.0) as usize
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEAR_WRAP: SeqNum = SeqNum(u32::MAX - 10);

    #[test]
    fn comparisons_across_the_wrap() {
        let after = NEAR_WRAP + 20; // wrapped to 9
        assert_eq!(after, SeqNum(9));
        assert!(NEAR_WRAP.lt(after));
        assert!(NEAR_WRAP.le(after));
        assert!(after.gt(NEAR_WRAP));
        assert!(after.ge(NEAR_WRAP));
        assert!(!after.lt(NEAR_WRAP));
        assert!(!NEAR_WRAP.gt(after));
        assert!(after.le(after) && after.ge(after));
        assert!(!after.lt(after) && !after.gt(after));
        assert_eq!(after.diff(NEAR_WRAP), 20);
        assert_eq!(NEAR_WRAP.diff(after), -20);
        // Half the space apart: both orders claim "less" (RFC 1982 undefined).
        let a = SeqNum(5);
        let b = SeqNum(5 + (1 << 31));
        assert_eq!(a.diff(b), i32::MIN);
        assert!(a.lt(b) && b.lt(a));
        // Just under half: well ordered.
        let c = SeqNum(5u32.wrapping_add((1 << 31) - 1));
        assert!(a.lt(c) && c.gt(a));
    }

    #[test]
    fn arithmetic_wraps() {
        assert_eq!(SeqNum(u32::MAX).add(1), SeqNum(0));
        assert_eq!(SeqNum(u32::MAX) + 2, SeqNum(1));
        assert_eq!(SeqNum(1) - 2, SeqNum(u32::MAX));
        assert_eq!(SeqNum(9) - NEAR_WRAP, 20);
        assert_eq!(NEAR_WRAP - NEAR_WRAP, 0);
        // Backwards distance wraps instead of panicking.
        assert_eq!(NEAR_WRAP - SeqNum(9), (1usize << 32) - 20);
        // Only the low 32 bits of a usize advance count.
        assert_eq!(SeqNum(3) + ((1usize << 32) + 4), SeqNum(7));
    }

    #[test]
    fn max_min() {
        let after = NEAR_WRAP + 20;
        assert_eq!(SeqNum::max(NEAR_WRAP, after), after);
        assert_eq!(SeqNum::max(after, NEAR_WRAP), after);
        assert_eq!(SeqNum::min(NEAR_WRAP, after), NEAR_WRAP);
        assert_eq!(after.min(NEAR_WRAP), NEAR_WRAP);
        assert_eq!(after.max(after), after);
    }

    #[test]
    fn in_range_across_the_wrap() {
        let start = NEAR_WRAP;
        let end = start + 100;
        assert!(start.in_range(start, end));
        assert!((start + 10).in_range(start, end)); // u32::MAX
        assert!((start + 11).in_range(start, end)); // 0
        assert!((start + 99).in_range(start, end));
        assert!(!end.in_range(start, end));
        assert!(!(start - 1).in_range(start, end));
        assert!(!SeqNum(1000).in_range(start, end));
        // Empty window.
        assert!(!start.in_range(start, start));
        // Agrees with the comparison definition for windows under 2^31.
        for off in [0u32, 1, 50, 99, 100, 101, 1 << 30, u32::MAX] {
            let s = SeqNum(start.0.wrapping_add(off));
            assert_eq!(s.in_range(start, end), start.le(s) && s.lt(end), "{off}");
        }
    }

    #[test]
    fn display_and_default() {
        assert_eq!(SeqNum(4_294_967_295).to_string(), "4294967295");
        assert_eq!(SeqNum::default(), SeqNum(0));
    }
}
