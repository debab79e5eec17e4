//! The 82576 bring-up, one function per step, over [`Regs`] (BAR0 or the
//! simulated device), in the order [`init`] runs them:
//!
//! 1. [`disable_interrupts`]: mask every cause, clear pending ones;
//! 2. [`reset`]: CTRL.RST, wait for it to clear and for the NVM auto-read;
//! 3. [`take_ownership`]: CTRL_EXT.DRV_LOAD, so firmware leaves the device be;
//! 4. [`read_mac`]: the address the NVM loaded into RAL0/RAH0;
//! 5. [`clear_multicast`] and [`set_filters`]: MTA empty, broadcast accepted;
//! 6. [`init_rx`] / [`init_tx`]: receiver and transmitter on (the queues
//!    themselves are programmed by [`super::ring`], then [`wait_queue_enabled`]);
//! 7. [`link_up`]: CTRL.SLU, PHY auto-negotiation through MDIC ([`phy_read`],
//!    [`phy_write`]); [`link_status`] reads the result.
//!
//! Interrupts ([`enable_msix`]) and statistics ([`Stats::update`]) are
//! separate. Waits go through a caller-supplied sleep so tests run them
//! without sleeping; every wait is bounded.

use std::time::Duration;

use super::igb_regs::{self as r};
use super::ring::Regs;

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgbError {
    #[error("igb: the device did not finish its reset (CTRL.RST still set after {0:?})")]
    ResetTimeout(Duration),
    #[error("igb: the NVM auto-read did not finish after reset (EEC.AUTO_RD clear after {0:?})")]
    NvmTimeout(Duration),
    #[error("igb: PHY register {reg} access through MDIC timed out")]
    MdicTimeout { reg: u32 },
    #[error("igb: PHY register {reg} access through MDIC failed (MDIC.E)")]
    MdicError { reg: u32 },
    #[error("igb: RX/TX queue {queue} did not enable ({what}DCTL.ENABLE clear after {after:?})")]
    QueueTimeout {
        queue: u32,
        what: &'static str,
        after: Duration,
    },
    #[error("igb: no valid MAC address in RAL0/RAH0 (blank NVM?)")]
    NoMac,
}

/// How to wait: `std::thread::sleep` on a device, nothing in tests.
pub type Sleep<'a> = &'a dyn Fn(Duration);

/// Polls until `reg & mask == want`, sleeping `step` between reads, at most
/// `steps` times. Returns whether it got there.
fn poll(
    regs: &impl Regs,
    sleep: Sleep<'_>,
    reg: u32,
    mask: u32,
    want: u32,
    step: Duration,
    steps: u32,
) -> bool {
    for _ in 0..steps {
        if regs.read(reg) & mask == want {
            return true;
        }
        sleep(step);
    }
    regs.read(reg) & mask == want
}

/// Poll step and count of the reset wait (the datasheet: about 1 ms).
const RESET_STEP: Duration = Duration::from_millis(1);
const RESET_STEPS: u32 = 100;
/// MDIC completes in tens of microseconds.
const MDIC_STEP: Duration = Duration::from_micros(50);
const MDIC_STEPS: u32 = 200;
/// Queue enable reads back within a few milliseconds.
const QUEUE_STEP: Duration = Duration::from_millis(1);
const QUEUE_STEPS: u32 = 100;

/// Step 1: masks every interrupt cause and clears pending ones.
pub fn disable_interrupts(regs: &impl Regs) {
    regs.write(r::IMC, r::IRQ_ALL);
    regs.write(r::EIMC, r::IRQ_ALL);
    regs.read(r::ICR);
    regs.read(r::EICR);
}

/// Step 2: resets the device and waits until it and the NVM auto-read
/// are done. Interrupts are masked again afterwards.
pub fn reset(regs: &impl Regs, sleep: Sleep<'_>) -> Result<(), IgbError> {
    disable_interrupts(regs);
    regs.write(r::CTRL, regs.read(r::CTRL) | r::ctrl::RST);
    sleep(RESET_STEP);
    let max = RESET_STEP * RESET_STEPS;
    if !poll(
        regs,
        sleep,
        r::CTRL,
        r::ctrl::RST,
        0,
        RESET_STEP,
        RESET_STEPS,
    ) {
        return Err(IgbError::ResetTimeout(max));
    }
    if !poll(
        regs,
        sleep,
        r::EEC,
        r::eec::AUTO_RD,
        r::eec::AUTO_RD,
        RESET_STEP,
        RESET_STEPS,
    ) {
        return Err(IgbError::NvmTimeout(max));
    }
    disable_interrupts(regs);
    Ok(())
}

/// Step 3: tells firmware (manageability) a driver now owns the device.
pub fn take_ownership(regs: &impl Regs) {
    regs.write(r::CTRL_EXT, regs.read(r::CTRL_EXT) | r::ctrl_ext::DRV_LOAD);
}

/// Gives the device back to firmware (on shutdown).
pub fn release_ownership(regs: &impl Regs) {
    regs.write(r::CTRL_EXT, regs.read(r::CTRL_EXT) & !r::ctrl_ext::DRV_LOAD);
}

/// Step 4: the MAC address in receive-address filter 0.
pub fn read_mac(regs: &impl Regs) -> Result<[u8; 6], IgbError> {
    let lo = regs.read(r::ral(0)).to_le_bytes();
    let hi = regs.read(r::rah(0));
    if hi & r::rah::AV == 0 {
        return Err(IgbError::NoMac);
    }
    let hi = (hi as u16).to_le_bytes();
    let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
    if mac == [0; 6] || mac[0] & 1 != 0 {
        return Err(IgbError::NoMac);
    }
    Ok(mac)
}

/// Sets the MAC address of receive-address filter 0.
pub fn set_mac(regs: &impl Regs, mac: [u8; 6]) {
    regs.write(
        r::ral(0),
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
    );
    regs.write(
        r::rah(0),
        u32::from(u16::from_le_bytes([mac[4], mac[5]])) | r::rah::AV,
    );
}

/// Step 5a: empties the multicast hash table.
pub fn clear_multicast(regs: &impl Regs) {
    for i in 0..r::MTA_LEN {
        regs.write(r::mta(i), 0);
    }
}

/// Accepts multicast address `mac` (sets its MTA hash bit; other groups
/// sharing the bit get through too, and the stack filters them).
pub fn add_multicast(regs: &impl Regs, mac: [u8; 6]) {
    let (reg, bit) = r::mta_hash(mac);
    let off = r::mta(reg);
    regs.write(off, regs.read(off) | 1 << bit);
}

/// Step 5b: the receive filters: broadcast always; promiscuous unicast
/// and multicast as asked. Leaves RCTL.EN as it is.
pub fn set_filters(regs: &impl Regs, unicast_promisc: bool, multicast_promisc: bool) {
    let mut v = regs.read(r::RCTL) & !(r::rctl::UPE | r::rctl::MPE | r::rctl::MO_MASK);
    v |= r::rctl::BAM;
    if unicast_promisc {
        v |= r::rctl::UPE;
    }
    if multicast_promisc {
        v |= r::rctl::MPE;
    }
    regs.write(r::RCTL, v);
}

/// Step 6a: the receiver on: CRC stripped, broadcast accepted, standard
/// frames (no LPE), filters as [`set_filters`] left them. The RX queues
/// must be programmed before (or their descriptors enabled after) this.
pub fn init_rx(regs: &impl Regs) {
    let keep = regs.read(r::RCTL) & (r::rctl::UPE | r::rctl::MPE);
    regs.write(r::RCTL, keep | r::rctl::EN | r::rctl::BAM | r::rctl::SECRC);
}

/// Step 6b: the transmitter on: short frames padded, the IEEE collision
/// threshold and full-duplex collision distance, retransmit on late collision.
pub fn init_tx(regs: &impl Regs) {
    /// TCTL.CT: 15 retries (IEEE 802.3).
    const COLLISION_THRESHOLD: u32 = 0x0f;
    /// TCTL.COLD: 64 byte times (full duplex).
    const COLLISION_DISTANCE: u32 = 0x40;
    regs.write(
        r::TCTL,
        r::tctl::EN
            | r::tctl::PSP
            | r::tctl::RTLC
            | COLLISION_THRESHOLD << r::tctl::CT_SHIFT
            | COLLISION_DISTANCE << r::tctl::COLD_SHIFT,
    );
}

/// Step 6c: waits for a queue's RXDCTL/TXDCTL.ENABLE to read back (before
/// its first tail write).
pub fn wait_queue_enabled(
    regs: &impl Regs,
    sleep: Sleep<'_>,
    queue: u32,
    rx: bool,
) -> Result<(), IgbError> {
    let (reg, what) = if rx {
        (r::rxdctl(queue), "RX")
    } else {
        (r::txdctl(queue), "TX")
    };
    if poll(
        regs,
        sleep,
        reg,
        r::dctl::ENABLE,
        r::dctl::ENABLE,
        QUEUE_STEP,
        QUEUE_STEPS,
    ) {
        Ok(())
    } else {
        Err(IgbError::QueueTimeout {
            queue,
            what,
            after: QUEUE_STEP * QUEUE_STEPS,
        })
    }
}

/// One MDIC access: writes the command, polls READY, checks ERROR.
fn mdic(regs: &impl Regs, sleep: Sleep<'_>, cmd: u32, reg: u32) -> Result<u16, IgbError> {
    regs.write(r::MDIC, cmd);
    for _ in 0..MDIC_STEPS {
        let v = regs.read(r::MDIC);
        if v & r::mdic::READY != 0 {
            if v & r::mdic::ERROR != 0 {
                return Err(IgbError::MdicError { reg });
            }
            return Ok((v & r::mdic::DATA_MASK) as u16);
        }
        sleep(MDIC_STEP);
    }
    Err(IgbError::MdicTimeout { reg })
}

/// Reads PHY register `reg` of the internal PHY.
pub fn phy_read(regs: &impl Regs, sleep: Sleep<'_>, reg: u32) -> Result<u16, IgbError> {
    let cmd = reg << r::mdic::REGADD_SHIFT
        | r::mdic::INTERNAL_PHY << r::mdic::PHYADD_SHIFT
        | r::mdic::OP_READ;
    mdic(regs, sleep, cmd, reg)
}

/// Writes PHY register `reg` of the internal PHY.
pub fn phy_write(regs: &impl Regs, sleep: Sleep<'_>, reg: u32, v: u16) -> Result<(), IgbError> {
    let cmd = u32::from(v)
        | reg << r::mdic::REGADD_SHIFT
        | r::mdic::INTERNAL_PHY << r::mdic::PHYADD_SHIFT
        | r::mdic::OP_WRITE;
    mdic(regs, sleep, cmd, reg).map(drop)
}

/// Step 7: sets link up and (re)starts auto-negotiation on the PHY. The
/// link comes up asynchronously: see [`link_status`].
pub fn link_up(regs: &impl Regs, sleep: Sleep<'_>) -> Result<(), IgbError> {
    regs.write(
        r::CTRL,
        (regs.read(r::CTRL) | r::ctrl::SLU) & !r::ctrl::PHY_RST,
    );
    let bmcr = phy_read(regs, sleep, r::phy::BMCR)?;
    phy_write(
        regs,
        sleep,
        r::phy::BMCR,
        bmcr | r::phy::BMCR_ANENABLE | r::phy::BMCR_ANRESTART,
    )
}

/// Link state as STATUS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Mb/s: 10, 100 or 1000.
    pub speed: u32,
    pub full_duplex: bool,
}

/// The link, if up.
pub fn link_status(regs: &impl Regs) -> Option<Link> {
    let s = regs.read(r::STATUS);
    if s & r::status::LU == 0 {
        return None;
    }
    let speed = match s & r::status::SPEED_MASK {
        r::status::SPEED_1000 | r::status::SPEED_MASK => 1000,
        r::status::SPEED_100 => 100,
        _ => 10,
    };
    Some(Link {
        speed,
        full_duplex: s & r::status::FD != 0,
    })
}

/// MSI-X vectors: RX queue 0 on `rx_vector`, link changes on `other_vector`.
/// The caller gives the device its eventfds (VFIO_DEVICE_SET_IRQS) first.
pub fn enable_msix(regs: &impl Regs, rx_vector: u32, other_vector: u32) {
    regs.write(
        r::GPIE,
        r::gpie::MSIX_MODE | r::gpie::PBA_SUPPORT | r::gpie::EIAME | r::gpie::NSICR,
    );
    let (reg, shift) = r::ivar::rx(0);
    let v = regs.read(reg) & !(0xff << shift);
    regs.write(reg, v | (rx_vector | r::ivar::VALID) << shift);
    regs.write(
        r::IVAR_MISC,
        (other_vector | r::ivar::VALID) << r::ivar::MISC_OTHER_SHIFT,
    );
    let vectors = 1 << rx_vector | 1 << other_vector;
    regs.write(r::EIAC, vectors);
    regs.write(r::EIAM, vectors);
    regs.write(r::IMS, r::icr::LSC);
    regs.write(r::EIMS, vectors);
}

/// Runs steps 1-7 except the queues: reset, ownership, MAC, filters, RX
/// and TX on, link up. Returns the device's MAC address.
pub fn init(regs: &impl Regs, sleep: Sleep<'_>) -> Result<[u8; 6], IgbError> {
    reset(regs, sleep)?;
    take_ownership(regs);
    let mac = read_mac(regs)?;
    clear_multicast(regs);
    set_filters(regs, false, false);
    init_rx(regs);
    init_tx(regs);
    link_up(regs, sleep)?;
    Ok(mac)
}

/// Running totals of the clear-on-read statistics registers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_missed: u64,
    pub rx_no_buffer: u64,
    pub rx_crc_errors: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

impl Stats {
    /// Adds what the device counted since the last read (the registers
    /// clear when read; octet counters low half first).
    pub fn update(&mut self, regs: &impl Regs) {
        let wide = |lo: u32| u64::from(regs.read(lo)) | u64::from(regs.read(lo + 4)) << 32;
        self.rx_frames += u64::from(regs.read(r::stats::GPRC));
        self.rx_bytes += wide(r::stats::GORCL);
        self.rx_missed += u64::from(regs.read(r::stats::MPC));
        self.rx_no_buffer += u64::from(regs.read(r::stats::RNBC));
        self.rx_crc_errors += u64::from(regs.read(r::stats::CRCERRS));
        self.tx_frames += u64::from(regs.read(r::stats::GPTC));
        self.tx_bytes += wide(r::stats::GOTCL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::sim::{SimIgb, DEFAULT_MAC};
    use std::cell::Cell;

    fn no_sleep(_: Duration) {}

    #[test]
    fn init_resets_reads_the_mac_and_brings_the_link_up() {
        let sim = SimIgb::new();
        sim.write(r::RCTL, r::rctl::UPE);
        sim.write(r::mta(5), 0xffff);
        let mac = init(&sim, &no_sleep).unwrap();
        assert_eq!(mac, DEFAULT_MAC);
        assert_eq!(sim.read(r::mta(5)), 0, "the reset and MTA clear took");
        let rctl = sim.read(r::RCTL);
        assert_eq!(rctl & r::rctl::UPE, 0);
        assert_ne!(rctl & r::rctl::EN, 0);
        assert_ne!(rctl & r::rctl::BAM, 0);
        assert_ne!(sim.read(r::TCTL) & r::tctl::EN, 0);
        assert_ne!(sim.read(r::CTRL_EXT) & r::ctrl_ext::DRV_LOAD, 0);
        assert_eq!(
            link_status(&sim),
            Some(Link {
                speed: 1000,
                full_duplex: true
            })
        );
        assert_ne!(sim.phy_reg(r::phy::BMCR) & r::phy::BMCR_ANENABLE, 0);
    }

    #[test]
    fn no_cable_no_link() {
        let sim = SimIgb::new();
        sim.set_cable(false);
        init(&sim, &no_sleep).unwrap();
        assert_eq!(link_status(&sim), None);
        let bmsr = phy_read(&sim, &no_sleep, r::phy::BMSR).unwrap();
        assert_eq!(bmsr & r::phy::BMSR_LSTATUS, 0);
    }

    #[test]
    fn a_reset_that_never_finishes_times_out_after_bounded_waits() {
        let sim = SimIgb::new();
        sim.set_stuck_reset(true);
        let slept = Cell::new(Duration::ZERO);
        let sleep = |d: Duration| slept.set(slept.get() + d);
        let e = reset(&sim, &sleep).unwrap_err();
        assert!(matches!(e, IgbError::ResetTimeout(_)), "{e}");
        assert!(slept.get() >= Duration::from_millis(100));
        assert!(slept.get() < Duration::from_millis(200));
    }

    #[test]
    fn phy_access_through_mdic() {
        let sim = SimIgb::new();
        phy_write(&sim, &no_sleep, 4, 0x01e1).unwrap();
        assert_eq!(sim.phy_reg(4), 0x01e1);
        assert_eq!(phy_read(&sim, &no_sleep, 4).unwrap(), 0x01e1);
        let bmsr = phy_read(&sim, &no_sleep, r::phy::BMSR).unwrap();
        assert_ne!(bmsr & r::phy::BMSR_LSTATUS, 0);
    }

    /// Registers that read as a fixed value: an MDIC that never completes,
    /// or always fails.
    struct Fixed(u32);
    impl Regs for Fixed {
        fn read(&self, _off: u32) -> u32 {
            self.0
        }
        fn write(&self, _off: u32, _v: u32) {}
    }

    #[test]
    fn mdic_timeout_and_error_are_reported() {
        assert_eq!(
            phy_read(&Fixed(0), &no_sleep, 1),
            Err(IgbError::MdicTimeout { reg: 1 })
        );
        assert_eq!(
            phy_read(&Fixed(r::mdic::READY | r::mdic::ERROR), &no_sleep, 2),
            Err(IgbError::MdicError { reg: 2 })
        );
        assert!(matches!(
            wait_queue_enabled(&Fixed(0), &no_sleep, 0, true),
            Err(IgbError::QueueTimeout { what: "RX", .. })
        ));
        assert_eq!(read_mac(&Fixed(0)), Err(IgbError::NoMac));
    }

    #[test]
    fn mac_and_multicast_filters() {
        let sim = SimIgb::new();
        let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        set_mac(&sim, mac);
        assert_eq!(read_mac(&sim).unwrap(), mac);
        clear_multicast(&sim);
        add_multicast(&sim, [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        assert_eq!(sim.read(r::mta(0)), 1 << 16);
        set_filters(&sim, true, true);
        let rctl = sim.read(r::RCTL);
        assert_ne!(rctl & r::rctl::UPE, 0);
        assert_ne!(rctl & r::rctl::MPE, 0);
        set_filters(&sim, false, false);
        assert_eq!(sim.read(r::RCTL) & (r::rctl::UPE | r::rctl::MPE), 0);
    }

    #[test]
    fn msix_routes_rx_queue_0_and_link_changes() {
        let sim = SimIgb::new();
        enable_msix(&sim, 0, 1);
        assert_ne!(sim.read(r::GPIE) & r::gpie::MSIX_MODE, 0);
        assert_eq!(sim.read(r::IVAR0) & 0xff, r::ivar::VALID);
        assert_eq!(sim.read(r::IVAR_MISC), (1 | r::ivar::VALID) << 8);
        assert_eq!(sim.read(r::EIMS), 0b11);
    }
}
