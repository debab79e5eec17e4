//! Multicast groups the stack has joined (stack-wide view, for IGMP and
//! the device filter). Per-socket memberships live in the socket slots.

/// Groups joined by any socket of the stack.
#[repr(C)]
pub struct GroupTable {
    /// Number of entries in use.
    pub len: u32,
    pub _pad: u32,
}
