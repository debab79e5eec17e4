//! Internet checksum (RFC 1071) helpers shared by IPv4, ICMP and UDP.
//!
//! The sum is kept as a `u32` partial one's-complement sum so that pieces
//! (pseudo-header, header, payload) can be accumulated separately and
//! folded once at the end.

use std::net::Ipv4Addr;

/// Add `data` to the partial one's-complement sum `sum`, reading 16-bit
/// big-endian words; exists so every protocol shares one fast summing loop.
///
/// Works 8 bytes at a time with an end-around carry (one's-complement sums
/// are endian- and width-agnostic once folded). An odd trailing byte is
/// padded with a zero low byte, so only the *last* piece of a multi-part sum
/// may have an odd length.
pub fn accumulate(data: &[u8], sum: u32) -> u32 {
    let mut acc = u64::from(sum);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(word);
        // When `carry` is set, `s <= u64::MAX - 1`, so this cannot overflow.
        acc = s + u64::from(carry);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc = add_carry(
            acc,
            u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])),
        );
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc = add_carry(acc, u64::from(u16::from_be_bytes([rest[0], rest[1]])));
        rest = &rest[2..];
    }
    if let Some(&last) = rest.first() {
        acc = add_carry(acc, u64::from(last) << 8);
    }
    // Fold 64 -> 32 bits with end-around carry (twice is always enough).
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

#[inline]
fn add_carry(acc: u64, value: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(value);
    s + u64::from(carry)
}

/// Fold a partial sum to 16 bits (carries added back), NOT complemented;
/// a packet whose checksum verifies folds to `0xffff`.
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Fold and complement a partial sum: the value to store in a checksum
/// field (computed with that field zeroed), or `0` when verifying.
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Partial sum of the IPv4 pseudo-header that UDP and TCP checksums cover.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(protocol)
        + u32::from(length)
}

/// Whether a TCP/UDP checksum field holds only the pseudo-header sum (what
/// a sender using checksum offload writes before the device completes it).
pub fn is_pseudo_only(field: u16, src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> bool {
    field == fold(pseudo_header_v4(src, dst, protocol, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 reference: sum 16-bit words, pad odd byte.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum += hi | lo;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(&data, 0)), 0xddf2);
        assert_eq!(finish(accumulate(&data, 0)), !0xddf2);
    }

    #[test]
    fn real_ipv4_header() {
        // Captured on Linux loopback: stored checksum 0xb277.
        let hdr = [
            0x45, 0x00, 0x00, 0x5c, 0x8a, 0x17, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0x7f, 0x00,
            0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
        ];
        assert_eq!(finish(accumulate(&hdr, 0)), 0xb277);
    }

    #[test]
    fn matches_reference_for_all_lengths_and_offsets() {
        // Pseudo-random bytes (xorshift) including many 0xff to stress carries.
        let mut x: u32 = 0x1234_5678;
        let data: Vec<u8> = (0..300)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    0xff
                } else {
                    x as u8
                }
            })
            .collect();
        for start in 0..8 {
            for end in start..data.len() {
                let slice = &data[start..end];
                assert_eq!(
                    finish(accumulate(slice, 0)),
                    reference(slice),
                    "{start}..{end}"
                );
            }
        }
        let ones = [0xffu8; 1000];
        assert_eq!(finish(accumulate(&ones, 0)), reference(&ones));
    }

    #[test]
    fn split_accumulation_equals_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let whole = fold(accumulate(&data, 0));
        let split = fold(accumulate(&data[600..], accumulate(&data[..600], 0)));
        assert_eq!(whole, split);
        // Carrying in a large incoming sum must not lose carries.
        // 0xffff_ffff is congruent to 0 mod 0xffff, so it must not change the result.
        assert_eq!(
            fold(accumulate(&data, 0xffff_ffff)),
            fold(accumulate(&data, 0))
        );
    }

    #[test]
    fn fold_and_finish() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(finish(0xffff), 0);
        assert_eq!(finish(0x1234), 0xedcb);
    }

    #[test]
    fn pseudo_header() {
        let sum = pseudo_header_v4(
            Ipv4Addr::new(192, 168, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            0x1234,
        );
        assert_eq!(sum, 0xc0a8 + 0x0001 + 0x0a00 + 0x0002 + 17 + 0x1234);
    }
}
