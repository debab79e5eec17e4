//! A memory-only pair of devices joining two stacks, like a cable between
//! two hosts: deterministic, needs no privileges, for tests and benchmarks.
//! Frames are copied from one stack's pool to the other's (they are
//! different arenas).

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core};

use crate::{Nic, NicCaps};

/// Frames in flight in one direction; bounded like a device ring.
type Wire = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Frames a direction holds before it drops (a NIC ring's worth).
pub const WIRE_CAPACITY: usize = 4096;

/// One end of a memory pair.
#[derive(Debug)]
pub struct PairNic {
    mac: EthernetAddress,
    mtu: u16,
    rx: Wire,
    tx: Wire,
    /// Frames dropped because the wire was full.
    pub dropped: u64,
}

/// Makes two connected ends with the given MACs.
pub fn pair(mac_a: EthernetAddress, mac_b: EthernetAddress, mtu: u16) -> (PairNic, PairNic) {
    let ab: Wire = Arc::default();
    let ba: Wire = Arc::default();
    (
        PairNic {
            mac: mac_a,
            mtu,
            rx: ba.clone(),
            tx: ab.clone(),
            dropped: 0,
        },
        PairNic {
            mac: mac_b,
            mtu,
            rx: ab,
            tx: ba,
            dropped: 0,
        },
    )
}

impl PairNic {
    /// This end's MAC.
    pub fn caps_mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Frames waiting to be received by this end.
    pub fn rx_pending(&self) -> usize {
        self.rx.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Nic for PairNic {
    fn name(&self) -> String {
        format!("pair:{}", self.mac)
    }

    fn caps(&self) -> NicCaps {
        NicCaps {
            mac: self.mac,
            mtu: self.mtu,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }

    fn receive(&mut self, core: &mut Core<'_>, out: &mut [BufId], _now: u64) -> io::Result<usize> {
        let mut q = self
            .rx
            .lock()
            .map_err(|_| io::Error::other("pair wire poisoned"))?;
        let mut n = 0;
        while n < out.len() {
            let Some(frame) = q.front() else { break };
            let Ok(b) = core.pool.alloc() else { break };
            core.pool.frame_mut(b, frame.len()).copy_from_slice(frame);
            q.pop_front();
            out[n] = b;
            n += 1;
        }
        Ok(n)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], _now: u64) -> io::Result<usize> {
        let mut q = self
            .tx
            .lock()
            .map_err(|_| io::Error::other("pair wire poisoned"))?;
        for &b in frames {
            if q.len() < WIRE_CAPACITY {
                q.push_back(core.pool.frame(b).to_vec());
            } else {
                self.dropped += 1;
            }
            core.pool.put(b);
        }
        Ok(frames.len())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}
