//! rbypass NIC backends: one trait, several devices.
//!
//! A [`Nic`] moves frames between a wire and the stack's packet buffers. The
//! stack itself is sans-IO; the [`driver::Driver`] is the loop that polls a
//! NIC, feeds the stack, and sleeps on the NIC's file descriptor when idle.
//!
//! Backends: [`loopback`] (in-arena, the default, no privileges), [`tap`]
//! (a Linux TAP device), [`pair`] (two stacks joined in memory, for tests),
//! and [`fault`], a wrapper that drops, duplicates, reorders, corrupts and
//! delays frames of any backend.

pub mod driver;
pub mod fault;
pub mod loopback;
pub mod pair;
pub mod spec;
pub mod tap;

use std::os::fd::RawFd;

use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core};

/// What a device can do and is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicCaps {
    /// The device's MAC address (the stack uses it as its own).
    pub mac: EthernetAddress,
    /// IP MTU.
    pub mtu: u16,
    /// The device verifies IPv4/UDP/TCP checksums of received frames.
    pub rx_checksum_verified: bool,
    /// The device fills transmit checksums itself.
    pub tx_checksum_offload: bool,
}

/// One network device as the stack sees it.
pub trait Nic: Send {
    /// Short description for logs and stackdump (`tap:rbt0`, `loop`).
    fn name(&self) -> String;

    /// Capabilities.
    fn caps(&self) -> NicCaps;

    /// Receives up to `out.len()` frames into buffers from the stack's pool;
    /// returns how many were written to `out` (the caller owns them).
    fn receive(
        &mut self,
        core: &mut Core<'_>,
        out: &mut [BufId],
        now: u64,
    ) -> std::io::Result<usize>;

    /// Transmits frames in order; returns how many it took (and released).
    /// Frames it did not take still belong to the caller.
    fn transmit(
        &mut self,
        core: &mut Core<'_>,
        frames: &[BufId],
        now: u64,
    ) -> std::io::Result<usize>;

    /// A file descriptor that becomes readable when frames arrive, for sleeping
    /// when idle; None if the device must be polled.
    fn wait_fd(&self) -> Option<RawFd>;

    /// The earliest time the device itself needs polling again (a delay line), if any.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}

impl<N: Nic + ?Sized> Nic for Box<N> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn caps(&self) -> NicCaps {
        (**self).caps()
    }
    fn receive(
        &mut self,
        core: &mut Core<'_>,
        out: &mut [BufId],
        now: u64,
    ) -> std::io::Result<usize> {
        (**self).receive(core, out, now)
    }
    fn transmit(
        &mut self,
        core: &mut Core<'_>,
        frames: &[BufId],
        now: u64,
    ) -> std::io::Result<usize> {
        (**self).transmit(core, frames, now)
    }
    fn wait_fd(&self) -> Option<RawFd> {
        (**self).wait_fd()
    }
    fn next_deadline(&self) -> Option<u64> {
        (**self).next_deadline()
    }
}
