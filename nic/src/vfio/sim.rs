//! A simulated 82576 for tests and benchmarks: a register file, a DMA
//! engine behind a software IOMMU, and the descriptor-ring behaviour the
//! ring code relies on.
//!
//! It acts on tail writes as the hardware does: an RDT write lets queued
//! frames land in the posted buffers (write-back with DD/EOP and length,
//! RDH advanced); a TDT write sends the queued descriptors (frames recorded,
//! DD written back where RS asks, TDH advanced), unless TX completion is
//! held back to test a full ring. Statistics registers count and clear on
//! read; a frame with no descriptor free waits in a small FIFO (the on-chip
//! packet buffer) and is dropped and counted in MPC when that is full.
//!
//! Also: CTRL.RST (registers back to defaults, MAC reloaded from the
//! simulated NVM), PHY access through MDIC, link up once CTRL.SLU is set.
//!
//! Not modelled: interrupts, filters (every frame is accepted), RSS
//! (frames arrive on queue 0), offloads, descriptor write-back batching.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::igb_regs::{self as r, AdvRxRead, AdvRxWb, AdvTxRead, AdvTxWb};
use super::ring::Regs;

/// Bytes of register space (BAR0 of the 82576 is 128 KiB).
const BAR_LEN: usize = 128 << 10;
/// Queues with per-queue registers.
const QUEUES: u32 = 16;
/// Frames the simulated on-chip RX buffer holds while no descriptor is free.
pub const RX_FIFO_FRAMES: usize = 64;
/// The MAC address a new simulated device has in its NVM.
pub const DEFAULT_MAC: [u8; 6] = [0x02, 0x1b, 0x21, 0x00, 0x00, 0x01];

/// One DMA mapping of the simulated IOMMU.
struct Mapping {
    iova: u64,
    ptr: *mut u8,
    len: usize,
}

struct State {
    regs: Vec<u32>,
    maps: Vec<Mapping>,
    rx_fifo: VecDeque<(Vec<u8>, u32)>,
    /// Frame vectors to reuse (no allocation per frame once warm).
    spare: Vec<Vec<u8>>,
    tx_auto: bool,
    tx_record: bool,
    tx_frame: Vec<u8>,
    sent: Vec<Vec<u8>>,
    sent_count: u64,
    dma_faults: u64,
    /// The MAC address in the simulated NVM (loaded into RAL0/RAH0 at reset).
    mac: [u8; 6],
    /// The PHY's MII registers, reached through MDIC.
    phy: [u16; 32],
    /// Whether a cable is plugged in (the link comes up once CTRL.SLU is set).
    cable: bool,
    /// A fault to inject: CTRL.RST never clears.
    stuck_reset: bool,
}

/// The simulated device. Register access goes through [`Regs`].
pub struct SimIgb {
    st: RefCell<State>,
}

impl Default for SimIgb {
    fn default() -> Self {
        Self::new()
    }
}

impl SimIgb {
    /// A device after reset, a cable plugged in (the link comes up at
    /// 1000 Mb/s full duplex once the driver sets CTRL.SLU), MAC
    /// [`DEFAULT_MAC`] in its NVM.
    pub fn new() -> SimIgb {
        let regs = vec![0u32; BAR_LEN / 4];
        let sim = SimIgb {
            st: RefCell::new(State {
                regs,
                maps: Vec::new(),
                rx_fifo: VecDeque::new(),
                spare: Vec::new(),
                tx_auto: true,
                tx_record: true,
                tx_frame: Vec::new(),
                sent: Vec::new(),
                sent_count: 0,
                dma_faults: 0,
                mac: DEFAULT_MAC,
                phy: [0; 32],
                cable: true,
                stuck_reset: false,
            }),
        };
        sim.st.borrow_mut().reset();
        sim
    }

    /// Lets the device reach `len` bytes at `ptr` as `iova` (what
    /// VFIO_IOMMU_MAP_DMA does for a real one).
    ///
    /// # Safety
    /// The memory must stay valid for reads and writes for as long as the
    /// device may use it (the life of this value), and nothing may hold a
    /// Rust reference into it while a register write makes the device
    /// access it.
    pub unsafe fn map_dma(&self, ptr: *mut u8, iova: u64, len: usize) {
        self.st.borrow_mut().maps.push(Mapping { iova, ptr, len });
    }

    /// A frame arrives from the wire (on queue 0). Returns false if the
    /// device had to drop it (FIFO full; counted in MPC).
    pub fn inject(&self, frame: &[u8]) -> bool {
        self.inject_with(frame, 0)
    }

    /// A frame arrives with extra write-back error bits ([`r::rx_error`]).
    pub fn inject_with(&self, frame: &[u8], errors: u32) -> bool {
        let mut st = self.st.borrow_mut();
        if st.rx_fifo.len() >= RX_FIFO_FRAMES {
            st.count(r::stats::MPC, 1);
            return false;
        }
        let mut v = st.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(frame);
        st.rx_fifo.push_back((v, errors));
        st.rx_process(0);
        true
    }

    /// Frames waiting for a descriptor.
    pub fn rx_pending(&self) -> usize {
        self.st.borrow().rx_fifo.len()
    }

    /// Whether a TDT write sends at once (default) or waits for
    /// [`SimIgb::complete_tx`].
    pub fn set_tx_auto(&self, on: bool) {
        self.st.borrow_mut().tx_auto = on;
    }

    /// Whether sent frames are kept for [`SimIgb::take_sent`] (default) or
    /// only counted.
    pub fn set_tx_record(&self, on: bool) {
        self.st.borrow_mut().tx_record = on;
    }

    /// Sends up to `max` queued descriptors of TX queue `q`; returns how many.
    pub fn complete_tx(&self, q: u32, max: usize) -> usize {
        self.st.borrow_mut().tx_process(q, max)
    }

    /// The frames sent since the last call, in order.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.st.borrow_mut().sent)
    }

    /// Frames sent in all.
    pub fn sent_count(&self) -> u64 {
        self.st.borrow().sent_count
    }

    /// Plugs or unplugs the cable.
    pub fn set_cable(&self, plugged: bool) {
        self.st.borrow_mut().cable = plugged;
    }

    /// Makes CTRL.RST stick (a device that never finishes its reset).
    pub fn set_stuck_reset(&self, on: bool) {
        self.st.borrow_mut().stuck_reset = on;
    }

    /// A PHY register as the device has it.
    pub fn phy_reg(&self, reg: u32) -> u16 {
        self.st.borrow().phy[(reg & 31) as usize]
    }

    /// DMA to addresses no mapping covers (a real IOMMU would fault).
    pub fn dma_faults(&self) -> u64 {
        self.st.borrow().dma_faults
    }
}

impl Regs for SimIgb {
    fn read(&self, off: u32) -> u32 {
        let mut st = self.st.borrow_mut();
        let i = (off / 4) as usize;
        let Some(&v) = st.regs.get(i) else {
            return !0;
        };
        if off == r::STATUS {
            return st.status();
        }
        if (r::stats::CRCERRS..0x4100).contains(&off) || off == r::EICR || off == r::ICR {
            st.regs[i] = 0;
        }
        v
    }

    fn write(&self, off: u32, v: u32) {
        let mut st = self.st.borrow_mut();
        let i = (off / 4) as usize;
        if i >= st.regs.len() {
            return;
        }
        st.regs[i] = v;
        if off == r::CTRL && v & r::ctrl::RST != 0 {
            if !st.stuck_reset {
                st.reset();
            }
            return;
        }
        if off == r::MDIC {
            st.mdic(v);
            return;
        }
        if let Some(q) = (0..QUEUES).find(|&q| r::rdt(q) == off) {
            st.rx_process(q);
        } else if let Some(q) = (0..QUEUES).find(|&q| r::tdt(q) == off) {
            if st.tx_auto {
                st.tx_process(q, usize::MAX);
            }
        }
    }
}

impl State {
    fn reg(&self, off: u32) -> u32 {
        self.regs[(off / 4) as usize]
    }

    fn set(&mut self, off: u32, v: u32) {
        self.regs[(off / 4) as usize] = v;
    }

    /// Adds to a statistics register (saturating, as the hardware's do).
    fn count(&mut self, off: u32, n: u32) {
        let v = self.reg(off).saturating_add(n);
        self.set(off, v);
    }

    /// Adds to a 64-bit low/high octet counter.
    fn count64(&mut self, lo: u32, n: u64) {
        let v = (u64::from(self.reg(lo + 4)) << 32 | u64::from(self.reg(lo))) + n;
        self.set(lo, v as u32);
        self.set(lo + 4, (v >> 32) as u32);
    }

    /// CTRL.RST: registers to their defaults, queues stopped, FIFOs
    /// emptied; the NVM auto-read loads the MAC into RAL0/RAH0.
    fn reset(&mut self) {
        self.regs.fill(0);
        self.rx_fifo.clear();
        self.tx_frame.clear();
        let m = self.mac;
        self.set(r::EEC, r::eec::AUTO_RD);
        self.set(r::ral(0), u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set(
            r::rah(0),
            u32::from(u16::from_le_bytes([m[4], m[5]])) | r::rah::AV,
        );
        self.phy = [0; 32];
        self.phy[r::phy::BMCR as usize] = r::phy::BMCR_ANENABLE;
    }

    /// STATUS as read: link up at 1000 full duplex with a cable and CTRL.SLU.
    fn status(&self) -> u32 {
        if self.cable && self.reg(r::CTRL) & r::ctrl::SLU != 0 {
            r::status::LU | r::status::FD | r::status::SPEED_1000
        } else {
            0
        }
    }

    /// An MDIC write: a PHY register read or write, done at once.
    fn mdic(&mut self, v: u32) {
        let phyadd = (v >> r::mdic::PHYADD_SHIFT) & 0x1f;
        let reg = ((v >> r::mdic::REGADD_SHIFT) & 0x1f) as usize;
        if phyadd != r::mdic::INTERNAL_PHY {
            self.set(r::MDIC, v | r::mdic::READY | r::mdic::ERROR);
            return;
        }
        let data = if v & r::mdic::OP_WRITE != 0 {
            // BMCR reset and restart self-clear at once here.
            let w = (v & r::mdic::DATA_MASK) as u16;
            self.phy[reg] = if reg == r::phy::BMCR as usize {
                w & !(r::phy::BMCR_RESET | r::phy::BMCR_ANRESTART)
            } else {
                w
            };
            w
        } else if reg == r::phy::BMSR as usize {
            if self.cable {
                r::phy::BMSR_LSTATUS | r::phy::BMSR_ANEGCOMPLETE
            } else {
                0
            }
        } else {
            self.phy[reg]
        };
        self.set(
            r::MDIC,
            (v & !r::mdic::DATA_MASK) | u32::from(data) | r::mdic::READY,
        );
    }

    /// The host memory behind `len` bytes at `iova`, if one mapping covers it.
    fn translate(&mut self, iova: u64, len: usize) -> Option<*mut u8> {
        let hit = self
            .maps
            .iter()
            .find(|m| iova >= m.iova && iova.saturating_add(len as u64) <= m.iova + m.len as u64);
        match hit {
            // SAFETY: inside the mapping (checked just above).
            Some(m) => Some(unsafe { m.ptr.add((iova - m.iova) as usize) }),
            None => {
                self.dma_faults += 1;
                None
            }
        }
    }

    fn read_desc<T: Copy>(&mut self, iova: u64) -> Option<T> {
        let p = self.translate(iova, std::mem::size_of::<T>())?;
        // SAFETY: mapped memory (map_dma's contract), 16-byte aligned ring slot.
        Some(unsafe { p.cast::<T>().read_volatile() })
    }

    fn write_desc<T: Copy>(&mut self, iova: u64, v: T) {
        if let Some(p) = self.translate(iova, std::mem::size_of::<T>()) {
            // SAFETY: as in read_desc.
            unsafe { p.cast::<T>().write_volatile(v) };
        }
    }

    /// Ring base IOVA and descriptor count from a queue's BAL/BAH/LEN.
    fn ring(&self, bal: u32, len: u32) -> (u64, u32) {
        let base = u64::from(self.reg(bal + 4)) << 32 | u64::from(self.reg(bal));
        (base, self.reg(len) / 16)
    }

    /// Lets FIFO frames land in the posted buffers of RX queue `q`.
    fn rx_process(&mut self, q: u32) {
        if self.reg(r::RCTL) & r::rctl::EN == 0 || self.reg(r::rxdctl(q)) & r::dctl::ENABLE == 0 {
            return;
        }
        let (base, n) = self.ring(r::rdbal(q), r::rdlen(q));
        if n == 0 {
            return;
        }
        let bsize = match (self.reg(r::srrctl(q)) & r::srrctl::BSIZEPKT_MASK) as usize {
            0 => 2048,
            k => k << r::srrctl::BSIZEPKT_SHIFT,
        };
        let mut head = self.reg(r::rdh(q)) % n;
        let tail = self.reg(r::rdt(q)) % n;
        while let Some(need) = self
            .rx_fifo
            .front()
            .map(|(f, _)| f.len().div_ceil(bsize).max(1) as u32)
        {
            if (tail + n - head) % n < need {
                break;
            }
            let Some((frame, errors)) = self.rx_fifo.pop_front() else {
                break;
            };
            for k in 0..need as usize {
                let chunk =
                    &frame[(k * bsize).min(frame.len())..((k + 1) * bsize).min(frame.len())];
                let at = base + u64::from(head) * 16;
                if let Some(d) = self.read_desc::<AdvRxRead>(at) {
                    if let Some(p) = self.translate(d.pkt_addr, chunk.len()) {
                        // SAFETY: mapped memory of at least chunk.len() bytes.
                        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), p, chunk.len()) };
                    }
                }
                let last = k + 1 == need as usize;
                let status = if last {
                    r::rx_status::DD | r::rx_status::EOP | errors
                } else {
                    r::rx_status::DD
                };
                self.write_desc(
                    at,
                    AdvRxWb {
                        pkt_info: 0,
                        rss: 0,
                        status_error: status,
                        length: chunk.len() as u16,
                        vlan: 0,
                    },
                );
                head = (head + 1) % n;
            }
            self.count(r::stats::TPR, 1);
            if errors == 0 {
                self.count(r::stats::GPRC, 1);
                self.count64(r::stats::GORCL, frame.len() as u64);
            }
            self.spare.push(frame);
        }
        self.set(r::rdh(q), head);
    }

    /// Sends up to `max` queued descriptors of TX queue `q`.
    fn tx_process(&mut self, q: u32, max: usize) -> usize {
        if self.reg(r::TCTL) & r::tctl::EN == 0 || self.reg(r::txdctl(q)) & r::dctl::ENABLE == 0 {
            return 0;
        }
        let (base, n) = self.ring(r::tdbal(q), r::tdlen(q));
        if n == 0 {
            return 0;
        }
        let mut head = self.reg(r::tdh(q)) % n;
        let tail = self.reg(r::tdt(q)) % n;
        let mut done = 0;
        while head != tail && done < max {
            let at = base + u64::from(head) * 16;
            let Some(d) = self.read_desc::<AdvTxRead>(at) else {
                break;
            };
            let cmd = d.cmd_type_len;
            let len = (cmd & r::tx_cmd::LEN_MASK) as usize;
            let advanced =
                cmd & r::tx_cmd::DEXT != 0 && cmd & r::tx_cmd::DTYP_MASK == r::tx_cmd::DTYP_DATA;
            if advanced {
                if let Some(p) = self.translate(d.buffer_addr, len) {
                    if self.tx_record {
                        // SAFETY: mapped memory of at least len bytes.
                        let data = unsafe { std::slice::from_raw_parts(p, len) };
                        self.tx_frame.extend_from_slice(data);
                    }
                }
                self.count64(r::stats::GOTCL, len as u64);
                if cmd & r::tx_cmd::EOP != 0 {
                    let f = std::mem::take(&mut self.tx_frame);
                    if self.tx_record {
                        self.sent.push(f);
                    }
                    self.sent_count += 1;
                    self.count(r::stats::GPTC, 1);
                    self.count(r::stats::TPT, 1);
                }
            }
            if cmd & r::tx_cmd::RS != 0 {
                self.write_desc(
                    at,
                    AdvTxWb {
                        rsvd: 0,
                        nxtseq_seed: 0,
                        status: r::tx_status::DD,
                    },
                );
            }
            head = (head + 1) % n;
            done += 1;
        }
        self.set(r::tdh(q), head);
        done
    }
}
