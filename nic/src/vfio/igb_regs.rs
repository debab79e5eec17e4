//! Intel 82576 (igb) registers: offsets in BAR0, bit fields, and the
//! advanced RX/TX descriptor layouts, all in one place (82576 datasheet,
//! chapters 7 and 8). Every register is 32 bits wide; statistics registers
//! clear when read.
//!
//! Per-queue registers (queues 0..16) are functions of the queue number:
//! queues 0-3 sit at `base + 0x100 * q`, queues 4-15 in a second block at
//! `alt + 0x40 * q`.

// ---------------------------------------------------------------- general

/// Device Control.
pub const CTRL: u32 = 0x0000;
/// Device Status (read only).
pub const STATUS: u32 = 0x0008;
/// EEPROM/Flash Control (auto-read done bit).
pub const EEC: u32 = 0x0010;
/// EEPROM Read (word reads of the NVM).
pub const EERD: u32 = 0x0014;
/// Extended Device Control.
pub const CTRL_EXT: u32 = 0x0018;
/// MDI Control: PHY register access.
pub const MDIC: u32 = 0x0020;
/// Flow Control Type.
pub const FCT: u32 = 0x0030;
/// VLAN Ether Type.
pub const VET: u32 = 0x0038;

/// [`CTRL`] bits.
pub mod ctrl {
    /// Full duplex.
    pub const FD: u32 = 1 << 0;
    /// Set Link Up: lets the MAC talk to the PHY's link.
    pub const SLU: u32 = 1 << 6;
    /// Device reset (self-clearing, ~1 ms); resets everything but PCI config.
    pub const RST: u32 = 1 << 26;
    /// VLAN mode enable.
    pub const VME: u32 = 1 << 30;
    /// PHY reset.
    pub const PHY_RST: u32 = 1 << 31;
}

/// [`STATUS`] bits.
pub mod status {
    /// Full duplex.
    pub const FD: u32 = 1 << 0;
    /// Link up.
    pub const LU: u32 = 1 << 1;
    /// Speed field (bits 7:6): 00 10 Mb/s, 01 100 Mb/s, 1x 1000 Mb/s.
    pub const SPEED_MASK: u32 = 0b11 << 6;
    /// Speed field value: 100 Mb/s.
    pub const SPEED_100: u32 = 0b01 << 6;
    /// Speed field value: 1000 Mb/s.
    pub const SPEED_1000: u32 = 0b10 << 6;
    /// PHY reset asserted (cleared by software after a reset).
    pub const PHYRA: u32 = 1 << 10;
}

/// [`EEC`] bits.
pub mod eec {
    /// The NVM auto-read after reset is done.
    pub const AUTO_RD: u32 = 1 << 9;
}

/// [`CTRL_EXT`] bits.
pub mod ctrl_ext {
    /// Tells firmware a driver has taken the device.
    pub const DRV_LOAD: u32 = 1 << 28;
    /// Reset of the PF done (SR-IOV).
    pub const PFRSTD: u32 = 1 << 14;
}

/// [`MDIC`] fields: write DATA|REGADD|PHYADD|OP, poll until READY, check ERROR.
pub mod mdic {
    /// Data to write / data read (bits 15:0).
    pub const DATA_MASK: u32 = 0xffff;
    /// PHY register number (bits 20:16).
    pub const REGADD_SHIFT: u32 = 16;
    /// PHY address (bits 25:21); the 82576's internal PHY is at 1.
    pub const PHYADD_SHIFT: u32 = 21;
    /// Opcode: write.
    pub const OP_WRITE: u32 = 0b01 << 26;
    /// Opcode: read.
    pub const OP_READ: u32 = 0b10 << 26;
    /// The access is done.
    pub const READY: u32 = 1 << 28;
    /// Interrupt when done.
    pub const INT_EN: u32 = 1 << 29;
    /// The access failed.
    pub const ERROR: u32 = 1 << 30;
    /// The internal copper PHY's address.
    pub const INTERNAL_PHY: u32 = 1;
}

/// IEEE MII registers of the PHY, reached through [`MDIC`].
pub mod phy {
    /// Basic Mode Control.
    pub const BMCR: u32 = 0;
    /// Basic Mode Status.
    pub const BMSR: u32 = 1;
    /// BMCR: PHY reset (self-clearing).
    pub const BMCR_RESET: u16 = 1 << 15;
    /// BMCR: auto-negotiation enable.
    pub const BMCR_ANENABLE: u16 = 1 << 12;
    /// BMCR: restart auto-negotiation.
    pub const BMCR_ANRESTART: u16 = 1 << 9;
    /// BMSR: link up (latched low: read twice).
    pub const BMSR_LSTATUS: u16 = 1 << 2;
    /// BMSR: auto-negotiation complete.
    pub const BMSR_ANEGCOMPLETE: u16 = 1 << 5;
}

// ---------------------------------------------------------------- interrupts

/// Interrupt Cause Read (legacy/other causes, clears on read).
pub const ICR: u32 = 0x00c0;
/// Interrupt Mask Set (other causes).
pub const IMS: u32 = 0x00d0;
/// Interrupt Mask Clear (other causes).
pub const IMC: u32 = 0x00d8;
/// General Purpose Interrupt Enable: interrupt mode.
pub const GPIE: u32 = 0x1514;
/// Extended Interrupt Cause Set.
pub const EICS: u32 = 0x1520;
/// Extended Interrupt Mask Set: bit n enables MSI-X vector n.
pub const EIMS: u32 = 0x1524;
/// Extended Interrupt Mask Clear.
pub const EIMC: u32 = 0x1528;
/// Extended Interrupt Auto Clear: causes cleared when their vector fires.
pub const EIAC: u32 = 0x152c;
/// Extended Interrupt Auto Mask.
pub const EIAM: u32 = 0x1530;
/// Extended Interrupt Cause Read (clears on read).
pub const EICR: u32 = 0x1580;
/// Interrupt Vector Allocation, 8 registers: which MSI-X vector each queue uses.
pub const IVAR0: u32 = 0x1700;
/// Interrupt Vector Allocation for other causes (link change).
pub const IVAR_MISC: u32 = 0x1740;

/// Every interrupt cause: written to [`IMC`]/[`EIMC`] to mask all.
pub const IRQ_ALL: u32 = 0xffff_ffff;

/// Extended Interrupt Throttle for vector `v` (minimum gap between interrupts).
pub const fn eitr(v: u32) -> u32 {
    0x1680 + 4 * v
}

/// [`ICR`]/[`IMS`] bits.
pub mod icr {
    /// Link status change.
    pub const LSC: u32 = 1 << 2;
}

/// [`GPIE`] bits.
pub mod gpie {
    /// Non-selective interrupt clear on read of EICR.
    pub const NSICR: u32 = 1 << 0;
    /// MSI-X mode: one vector per cause group, as [`super::IVAR0`] says.
    pub const MSIX_MODE: u32 = 1 << 4;
    /// Extended interrupt auto mask enable.
    pub const EIAME: u32 = 1 << 30;
    /// PBA support (required with MSI-X).
    pub const PBA_SUPPORT: u32 = 1 << 31;
}

/// IVAR entries: each byte names a vector (bits 4:0) with a valid bit.
pub mod ivar {
    /// The entry is valid.
    pub const VALID: u32 = 0x80;
    /// Shift of the other-causes entry in [`super::IVAR_MISC`] (byte 1).
    pub const MISC_OTHER_SHIFT: u32 = 8;

    /// Register and bit shift of RX queue `q`'s entry (82576 layout:
    /// queues 0-7 bytes 0, queues 8-15 byte 2, of register `q % 8`).
    pub const fn rx(q: u32) -> (u32, u32) {
        (super::IVAR0 + 4 * (q & 7), if q & 8 != 0 { 16 } else { 0 })
    }

    /// Register and bit shift of TX queue `q`'s entry (bytes 1 and 3).
    pub const fn tx(q: u32) -> (u32, u32) {
        (super::IVAR0 + 4 * (q & 7), if q & 8 != 0 { 24 } else { 8 })
    }
}

// ---------------------------------------------------------------- receive

/// Receive Control.
pub const RCTL: u32 = 0x0100;
/// RX Packet Buffer Size (on-chip FIFO, KB).
pub const RXPBS: u32 = 0x2404;
/// RX Checksum Control.
pub const RXCSUM: u32 = 0x5000;
/// RX Long Packet Maximum Length (with RCTL.LPE).
pub const RLPML: u32 = 0x5004;
/// Multicast Table Array: 128 registers of 32 hash bits.
pub const MTA: u32 = 0x5200;
/// Number of [`MTA`] registers.
pub const MTA_LEN: u32 = 128;
/// Receive Address Low/High pairs: 24 exact-match unicast filters.
pub const RAL0: u32 = 0x5400;

/// [`MTA`] register `i`.
pub const fn mta(i: u32) -> u32 {
    MTA + 4 * i
}

/// Receive Address Low of filter `i` (MAC bytes 0-3).
pub const fn ral(i: u32) -> u32 {
    if i < 16 {
        RAL0 + 8 * i
    } else {
        0x54e0 + 8 * (i - 16)
    }
}

/// Receive Address High of filter `i` (MAC bytes 4-5, [`rah::AV`]).
pub const fn rah(i: u32) -> u32 {
    ral(i) + 4
}

/// [`RAH`](rah) bits.
pub mod rah {
    /// Address valid: the filter is in use.
    pub const AV: u32 = 1 << 31;
}

/// [`RCTL`] bits.
pub mod rctl {
    /// Receiver enable.
    pub const EN: u32 = 1 << 1;
    /// Store bad packets.
    pub const SBP: u32 = 1 << 2;
    /// Unicast promiscuous.
    pub const UPE: u32 = 1 << 3;
    /// Multicast promiscuous.
    pub const MPE: u32 = 1 << 4;
    /// Long packets (over 1522 bytes) enable.
    pub const LPE: u32 = 1 << 5;
    /// Multicast offset (bits 13:12): which address bits hash into the MTA; 00 = bits 47:36.
    pub const MO_MASK: u32 = 0b11 << 12;
    /// Broadcast accept.
    pub const BAM: u32 = 1 << 15;
    /// VLAN filter enable.
    pub const VFE: u32 = 1 << 18;
    /// Strip the Ethernet CRC from received frames.
    pub const SECRC: u32 = 1 << 26;
}

/// [`RXCSUM`] bits.
pub mod rxcsum {
    /// IPv4 header checksum offload.
    pub const IPOFL: u32 = 1 << 8;
    /// TCP/UDP checksum offload.
    pub const TUOFL: u32 = 1 << 9;
    /// Packet checksum disable (RSS hash in the descriptor instead).
    pub const PCSD: u32 = 1 << 13;
}

/// RX Descriptor Base Address Low of queue `q`.
pub const fn rdbal(q: u32) -> u32 {
    if q < 4 {
        0x2800 + 0x100 * q
    } else {
        0xc000 + 0x40 * q
    }
}
/// RX Descriptor Base Address High.
pub const fn rdbah(q: u32) -> u32 {
    rdbal(q) + 0x04
}
/// RX Descriptor ring Length in bytes (a multiple of 128).
pub const fn rdlen(q: u32) -> u32 {
    rdbal(q) + 0x08
}
/// Split and Replication Receive Control: buffer size and descriptor type.
pub const fn srrctl(q: u32) -> u32 {
    rdbal(q) + 0x0c
}
/// RX Descriptor Head: next descriptor the device fills.
pub const fn rdh(q: u32) -> u32 {
    rdbal(q) + 0x10
}
/// RX Descriptor Tail: one past the last descriptor software posted.
pub const fn rdt(q: u32) -> u32 {
    rdbal(q) + 0x18
}
/// RX Descriptor Control: prefetch/write-back thresholds, queue enable.
pub const fn rxdctl(q: u32) -> u32 {
    rdbal(q) + 0x28
}

/// [`srrctl`] fields.
pub mod srrctl {
    /// Packet buffer size in KB (bits 6:0): bytes >> this shift.
    pub const BSIZEPKT_SHIFT: u32 = 10;
    /// Mask of the packet buffer size field.
    pub const BSIZEPKT_MASK: u32 = 0x7f;
    /// Descriptor type (bits 27:25): advanced, one buffer.
    pub const DESCTYPE_ADV_ONEBUF: u32 = 0b001 << 25;
    /// Mask of the descriptor type field.
    pub const DESCTYPE_MASK: u32 = 0b111 << 25;
    /// Drop frames when no descriptor is free (instead of filling the FIFO).
    pub const DROP_EN: u32 = 1 << 31;
}

/// [`rxdctl`]/[`txdctl`] fields (same layout for both).
pub mod dctl {
    /// Prefetch threshold (bits 4:0).
    pub const PTHRESH_SHIFT: u32 = 0;
    /// Host threshold (bits 12:8).
    pub const HTHRESH_SHIFT: u32 = 8;
    /// Write-back threshold (bits 20:16): 1 writes every descriptor back at once.
    pub const WTHRESH_SHIFT: u32 = 16;
    /// Queue enable (reads back 1 once the queue runs).
    pub const ENABLE: u32 = 1 << 25;
    /// Software flush of the queue.
    pub const SWFLSH: u32 = 1 << 26;
}

// ---------------------------------------------------------------- transmit

/// Transmit Control.
pub const TCTL: u32 = 0x0400;
/// Transmit Inter Packet Gap.
pub const TIPG: u32 = 0x0410;
/// TX Packet Buffer Size (on-chip FIFO, KB).
pub const TXPBS: u32 = 0x3404;

/// [`TCTL`] bits.
pub mod tctl {
    /// Transmitter enable.
    pub const EN: u32 = 1 << 1;
    /// Pad short packets to 64 bytes.
    pub const PSP: u32 = 1 << 3;
    /// Collision threshold (bits 11:4).
    pub const CT_SHIFT: u32 = 4;
    /// Collision distance (bits 21:12).
    pub const COLD_SHIFT: u32 = 12;
    /// Retransmit on late collision.
    pub const RTLC: u32 = 1 << 24;
}

/// TX Descriptor Base Address Low of queue `q`.
pub const fn tdbal(q: u32) -> u32 {
    if q < 4 {
        0x3800 + 0x100 * q
    } else {
        0xe000 + 0x40 * q
    }
}
/// TX Descriptor Base Address High.
pub const fn tdbah(q: u32) -> u32 {
    tdbal(q) + 0x04
}
/// TX Descriptor ring Length in bytes (a multiple of 128).
pub const fn tdlen(q: u32) -> u32 {
    tdbal(q) + 0x08
}
/// TX Descriptor Head: next descriptor the device sends.
pub const fn tdh(q: u32) -> u32 {
    tdbal(q) + 0x10
}
/// TX Descriptor Tail: one past the last descriptor software queued.
pub const fn tdt(q: u32) -> u32 {
    tdbal(q) + 0x18
}
/// TX Descriptor Control (layout as [`dctl`]).
pub const fn txdctl(q: u32) -> u32 {
    tdbal(q) + 0x28
}
/// TX Descriptor completion Write-Back Address Low (head write-back).
pub const fn tdwbal(q: u32) -> u32 {
    tdbal(q) + 0x38
}
/// TX Descriptor completion Write-Back Address High.
pub const fn tdwbah(q: u32) -> u32 {
    tdbal(q) + 0x3c
}

// ---------------------------------------------------------------- statistics

/// Statistics registers (32 bits, clear on read; the octet counters are
/// 64 bits as a low/high pair, low read first).
pub mod stats {
    /// CRC errors.
    pub const CRCERRS: u32 = 0x4000;
    /// RX frames missed: the on-chip FIFO was full (no descriptors).
    pub const MPC: u32 = 0x4010;
    /// Good frames received.
    pub const GPRC: u32 = 0x4074;
    /// Broadcast frames received.
    pub const BPRC: u32 = 0x4078;
    /// Multicast frames received.
    pub const MPRC: u32 = 0x407c;
    /// Good frames transmitted.
    pub const GPTC: u32 = 0x4080;
    /// Good octets received, low 32 bits.
    pub const GORCL: u32 = 0x4088;
    /// Good octets received, high 32 bits.
    pub const GORCH: u32 = 0x408c;
    /// Good octets transmitted, low 32 bits.
    pub const GOTCL: u32 = 0x4090;
    /// Good octets transmitted, high 32 bits.
    pub const GOTCH: u32 = 0x4094;
    /// RX no-buffer count: frames that found no free descriptor.
    pub const RNBC: u32 = 0x40a0;
    /// RX undersize frames.
    pub const RUC: u32 = 0x40a4;
    /// RX oversize frames.
    pub const ROC: u32 = 0x40ac;
    /// Total frames received.
    pub const TPR: u32 = 0x40d0;
    /// Total frames transmitted.
    pub const TPT: u32 = 0x40d4;
    /// Multicast frames transmitted.
    pub const MPTC: u32 = 0x40f0;
    /// Broadcast frames transmitted.
    pub const BPTC: u32 = 0x40f4;
}

// ---------------------------------------------------------------- descriptors

/// Advanced RX descriptor, read format (what software posts): 16 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdvRxRead {
    /// IOVA of the packet buffer (bit 0 must be 0).
    pub pkt_addr: u64,
    /// IOVA of the header buffer (header split only; 0 here). Its bit 0
    /// overlays [`rx_status::DD`] of the write-back.
    pub hdr_addr: u64,
}

/// Advanced RX descriptor, write-back format (what the device writes over
/// the read format once the buffer holds a frame): 16 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdvRxWb {
    /// Packet type (bits 16:4 of the low half) and header info.
    pub pkt_info: u32,
    /// RSS hash, or IP identification and packet checksum.
    pub rss: u32,
    /// Extended status (low bits, [`rx_status`]) and errors ([`rx_error`]).
    pub status_error: u32,
    /// Bytes written to the packet buffer.
    pub length: u16,
    /// VLAN tag (when stripped).
    pub vlan: u16,
}

/// [`AdvRxWb::status_error`] status bits.
pub mod rx_status {
    /// Descriptor done: the device wrote this descriptor back.
    pub const DD: u32 = 1 << 0;
    /// End of packet: the last descriptor of a frame.
    pub const EOP: u32 = 1 << 1;
    /// The frame carried a VLAN tag.
    pub const VP: u32 = 1 << 3;
    /// UDP checksum computed ([`super::rx_error::TCPE`] says whether bad).
    pub const UDPCS: u32 = 1 << 4;
    /// TCP/UDP checksum computed.
    pub const L4CS: u32 = 1 << 5;
    /// IPv4 header checksum computed.
    pub const IPCS: u32 = 1 << 6;
}

/// [`AdvRxWb::status_error`] error bits.
pub mod rx_error {
    /// Header length error (header split).
    pub const HBO: u32 = 1 << 23;
    /// TCP/UDP checksum error.
    pub const TCPE: u32 = 1 << 29;
    /// IPv4 header checksum error.
    pub const IPE: u32 = 1 << 30;
    /// RX data error (CRC, symbol, ...): the frame is bad.
    pub const RXE: u32 = 1 << 31;
}

/// Advanced TX data descriptor, read format (what software queues): 16 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdvTxRead {
    /// IOVA of the data.
    pub buffer_addr: u64,
    /// Data length (bits 15:0), descriptor type, command ([`tx_cmd`]).
    pub cmd_type_len: u32,
    /// Payload length ([`tx_cmd::PAYLEN_SHIFT`]), offload options; status on write-back.
    pub olinfo_status: u32,
}

/// Advanced TX descriptor, write-back format: 16 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdvTxWb {
    pub rsvd: u64,
    pub nxtseq_seed: u32,
    /// [`tx_status`].
    pub status: u32,
}

/// [`AdvTxRead::cmd_type_len`] fields.
pub mod tx_cmd {
    /// Mask of the data length of this descriptor.
    pub const LEN_MASK: u32 = 0xffff;
    /// Descriptor type: advanced data (bits 23:20 = 0011).
    pub const DTYP_DATA: u32 = 0b0011 << 20;
    /// Mask of the descriptor type field.
    pub const DTYP_MASK: u32 = 0b1111 << 20;
    /// End of packet.
    pub const EOP: u32 = 1 << 24;
    /// Insert the Ethernet FCS.
    pub const IFCS: u32 = 1 << 25;
    /// Report status: write DD back when done.
    pub const RS: u32 = 1 << 27;
    /// Descriptor extension: advanced format.
    pub const DEXT: u32 = 1 << 29;
    /// Insert the VLAN tag.
    pub const VLE: u32 = 1 << 30;
    /// TCP segmentation.
    pub const TSE: u32 = 1 << 31;
    /// Shift of the whole frame's payload length in `olinfo_status`.
    pub const PAYLEN_SHIFT: u32 = 14;
}

/// [`AdvTxWb::status`] bits.
pub mod tx_status {
    /// Descriptor done: the device has sent it (with RS set).
    pub const DD: u32 = 1 << 0;
}

/// The MTA bit an Ethernet multicast address hashes to, with RCTL.MO = 00
/// (address bits 47:36): (register index, bit in it).
pub fn mta_hash(mac: [u8; 6]) -> (u32, u32) {
    let hash = ((u32::from(mac[4]) >> 4) | (u32::from(mac[5]) << 4)) & 0xfff;
    ((hash >> 5) & (MTA_LEN - 1), hash & 0x1f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_16_bytes() {
        use std::mem::size_of;
        assert_eq!(size_of::<AdvRxRead>(), 16);
        assert_eq!(size_of::<AdvRxWb>(), 16);
        assert_eq!(size_of::<AdvTxRead>(), 16);
        assert_eq!(size_of::<AdvTxWb>(), 16);
        assert_eq!(std::mem::offset_of!(AdvRxWb, status_error), 8);
        assert_eq!(std::mem::offset_of!(AdvRxWb, length), 12);
        assert_eq!(std::mem::offset_of!(AdvTxWb, status), 12);
    }

    #[test]
    fn per_queue_registers_follow_the_two_blocks() {
        assert_eq!(rdbal(0), 0x2800);
        assert_eq!(rdt(0), 0x2818);
        assert_eq!(rdt(3), 0x2b18);
        assert_eq!(rxdctl(1), 0x2928);
        assert_eq!(srrctl(0), 0x280c);
        assert_eq!(rdbal(4), 0xc100);
        assert_eq!(rdt(15), 0xc3d8);
        assert_eq!(tdbal(0), 0x3800);
        assert_eq!(tdt(0), 0x3818);
        assert_eq!(txdctl(2), 0x3a28);
        assert_eq!(tdh(5), 0xe150);
        assert_eq!(ral(0), 0x5400);
        assert_eq!(rah(1), 0x540c);
        assert_eq!(ral(16), 0x54e0);
        assert_eq!(mta(127), 0x53fc);
        assert_eq!(ivar::rx(9), (0x1704, 16));
        assert_eq!(ivar::tx(0), (0x1700, 8));
    }

    #[test]
    fn mta_hash_uses_address_bits_47_36() {
        // 01:00:5e:00:00:01 (all-hosts): hash 0x010.
        assert_eq!(mta_hash([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]), (0, 16));
        // 33:33:ff:12:34:56: hash = 0x563 -> register 0x2b, bit 3.
        assert_eq!(mta_hash([0x33, 0x33, 0xff, 0x12, 0x34, 0x56]), (0x2b, 3));
    }
}
