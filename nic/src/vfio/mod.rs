//! VFIO: driving a PCI network card from user space (`vfio:BDF`), the
//! device's DMA going straight to and from the stack's packet buffers.
//!
//! The pieces, bottom up:
//! - [`sys`]: thin typed wrappers over the VFIO ioctls, one function each;
//! - [`device`]: opening a device by PCI address (container, group,
//!   viability, IOMMU type, device fd), with errors that say how to fix the
//!   setup;
//! - [`dma`]: page-aligned memory for descriptor rings, and the IOVA plan;
//! - [`igb_regs`]: the Intel 82576 (igb) registers, bit fields and
//!   advanced descriptor layouts, all in one place;
//! - [`igb`]: the bring-up, one function per step (reset, ownership, MAC,
//!   filters, RX/TX enable, PHY link through MDIC, MSI-X routing, stats);
//! - [`ring`]: the RX and TX descriptor-ring logic over a [`ring::Regs`]
//!   register interface, so the same code drives real MMIO ([`device::Bar`])
//!   and the simulated device;
//! - [`sim`]: a simulated igb for tests and benchmarks.
//!
//! Not here yet: the [`crate::Nic`] backend that puts these together on a
//! real device (BAR0 mapped, packet memory DMA-mapped, MSI-X eventfd as the
//! wait fd) and the `vfio:BDF` spec.

pub mod device;
pub mod dma;
pub mod igb;
pub mod igb_regs;
pub mod ring;
pub mod sim;
pub mod sys;

#[cfg(test)]
mod ring_tests;
