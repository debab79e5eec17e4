//! TCP (RFC 9293): control blocks in the arena, sans-IO segment processing,
//! loss recovery (RFC 6298, 5681, 6582, 6675), congestion control behind a
//! small trait (NewReno, CUBIC), options (MSS, window scale, SACK,
//! timestamps), and the socket API.

pub mod cc;
pub mod conn;
mod input;
pub mod rtt;
pub mod sack;
pub mod tcb;

/// Duplicate ACKs (or SACKed segments) that signal a loss (RFC 5681, 6675).
pub const DUP_THRESH: u32 = 3;
