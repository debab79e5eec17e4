//! Wire formats: one module per protocol header, parse and emit with checked lengths.
//!
//! Every `new_checked`/`parse` validates lengths before any field access, so
//! arbitrary (hostile or truncated) input yields an [`Error`] rather than a
//! panic. `new_unchecked` wrappers exist for buffers the stack built itself.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod igmp;
pub mod ipv4;
pub mod seq;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod testdata;

pub use arp::{ArpOperation, ArpRepr};
pub use ethernet::{EthernetAddress, EthernetFrame};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use udp::{UdpPacket, UdpRepr};

/// Why a packet could not be parsed or emitted; lets callers count and drop
/// bad frames by category instead of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header or a length field requires.
    #[error("buffer truncated")]
    Truncated,
    /// A field holds a value that is impossible for this protocol.
    #[error("malformed packet")]
    Malformed,
    /// The checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// A well-formed packet using a feature this stack does not implement.
    #[error("unsupported packet")]
    Unsupported,
}

/// Result type of all wire-format operations.
pub type Result<T> = core::result::Result<T, Error>;

/// Read a big-endian `u16` at `at`; callers must have checked the length.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Write a big-endian `u16` at `at`; callers must have checked the length.
#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
