//! The `loop` device: every frame the stack transmits comes straight back,
//! through a ring of buffer indices in the arena, with no copy and no system
//! call. The default device; needs no privileges.

use std::io;
use std::os::fd::RawFd;

use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core};

use crate::{Nic, NicCaps};

/// The in-arena loopback device.
#[derive(Debug, Clone)]
pub struct LoopbackNic {
    mac: EthernetAddress,
    mtu: u16,
}

impl LoopbackNic {
    /// A loopback device with the given MAC (the stack's own).
    pub fn new(mac: EthernetAddress, mtu: u16) -> Self {
        LoopbackNic { mac, mtu }
    }
}

impl Default for LoopbackNic {
    fn default() -> Self {
        let c = rbypass_stack::IfaceConfig::loopback();
        Self::new(c.mac(), c.mtu)
    }
}

impl Nic for LoopbackNic {
    fn name(&self) -> String {
        "loop".into()
    }

    fn caps(&self) -> NicCaps {
        NicCaps {
            mac: self.mac,
            mtu: self.mtu,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }

    fn receive(
        &mut self,
        _core: &mut Core<'_>,
        _out: &mut [BufId],
        _now: u64,
    ) -> io::Result<usize> {
        // Frames come back through the arena's loop ring, which the stack drains in poll().
        Ok(0)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], _now: u64) -> io::Result<usize> {
        for &b in frames {
            core.loop_push(b);
        }
        Ok(frames.len())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}
