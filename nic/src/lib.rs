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

pub mod bpf;
pub mod ctl;
pub mod driver;
pub mod fault;
pub mod flow;
pub mod flow_prog;
pub mod loopback;
pub mod netlink;
pub mod packet;
pub mod pair;
pub mod share;
mod sockopt;
pub mod spec;
pub mod tap;
pub mod vfio;
pub mod xdp;
pub mod xsk;

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

    /// The name and how the device runs, for stackdump
    /// (`xdp:eth0 native zero-copy 4q`).
    fn describe(&self) -> String {
        self.name()
    }

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

    /// The interface configuration the device's host gives it (address,
    /// prefix, gateway, MTU, MAC read from the kernel), for devices the
    /// stack shares with the kernel; None if the user must give one.
    fn iface(&self) -> Option<rbypass_stack::IfaceConfig> {
        None
    }

    /// Connects the device to the stack's memory, once the stack exists (an
    /// AF_XDP device registers the packet buffers as its UMEM and posts
    /// receive buffers). An error leaves the device unusable.
    fn attach(&mut self, _core: &mut Core<'_>) -> std::io::Result<()> {
        Ok(())
    }

    /// Brings the device's kernel-side filter in line with the flows the
    /// stack owns now (see [`flow::FlowSet`]), so it steers exactly those
    /// frames to the stack and leaves the rest to the kernel. Called before
    /// every transmit burst (a SYN must not leave before its SYN-ACK is
    /// steered). Devices that see only the stack's traffic (loopback, TAP)
    /// have nothing to do.
    fn sync_flows(&mut self, _core: &Core<'_>) -> std::io::Result<()> {
        Ok(())
    }

    /// File descriptors a process that carries the stack on after the app
    /// exits (the linger process) must keep for this device.
    fn keep_fds(&self) -> Vec<RawFd> {
        self.wait_fd().into_iter().collect()
    }

    /// File descriptors another process needs to drive this device for the
    /// same stack (it takes them with pidfd_getfd), in the order the
    /// backend's `join` expects; empty if the device cannot be shared.
    fn shared_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Whether the kernel still speaks IGMP for the host on this device
    /// (AF_XDP, AF_PACKET: the app's kernel sockets join too, and queries
    /// reach the kernel), so the stack must not send reports of its own.
    fn kernel_speaks_igmp(&self) -> bool {
        false
    }
}

impl<N: Nic + ?Sized> Nic for Box<N> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn caps(&self) -> NicCaps {
        (**self).caps()
    }
    fn describe(&self) -> String {
        (**self).describe()
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
    fn sync_flows(&mut self, core: &Core<'_>) -> std::io::Result<()> {
        (**self).sync_flows(core)
    }
    fn iface(&self) -> Option<rbypass_stack::IfaceConfig> {
        (**self).iface()
    }
    fn attach(&mut self, core: &mut Core<'_>) -> std::io::Result<()> {
        (**self).attach(core)
    }
    fn keep_fds(&self) -> Vec<RawFd> {
        (**self).keep_fds()
    }
    fn shared_fds(&self) -> Vec<RawFd> {
        (**self).shared_fds()
    }
    fn kernel_speaks_igmp(&self) -> bool {
        (**self).kernel_speaks_igmp()
    }
}
