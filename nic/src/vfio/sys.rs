//! Thin typed wrappers over the VFIO ioctls we use (linux/vfio.h), one small
//! function per ioctl, in the style of rust-vmm: `#[repr(C)]` structs that
//! match the kernel's, `argsz` filled in here, errors as `io::Error`.
//!
//! The container fd is `/dev/vfio/vfio`, the group fd `/dev/vfio/N`, the
//! device fd what [`group_get_device_fd`] returns.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The VFIO API version this code speaks (`VFIO_API_VERSION`).
pub const API_VERSION: i32 = 0;

/// IOMMU types for [`set_iommu`] and [`check_extension`].
pub mod iommu {
    /// `VFIO_TYPE1_IOMMU`: x86 style IOMMU (VT-d, AMD-Vi).
    pub const TYPE1: u32 = 1;
    /// `VFIO_TYPE1v2_IOMMU`: type 1 with stricter unmap semantics; preferred.
    pub const TYPE1V2: u32 = 3;
    /// `VFIO_NOIOMMU_IOMMU`: no IOMMU at all (unsafe mode, IOVA = physical).
    pub const NOIOMMU: u32 = 8;
}

/// `vfio_group_status.flags`.
pub mod group_flags {
    /// Every device in the group is bound to a VFIO driver (or none).
    pub const VIABLE: u32 = 1 << 0;
    /// The group is attached to a container.
    pub const CONTAINER_SET: u32 = 1 << 1;
}

/// `vfio_region_info.flags`.
pub mod region_flags {
    /// The region can be read with pread on the device fd.
    pub const READ: u32 = 1 << 0;
    /// The region can be written with pwrite on the device fd.
    pub const WRITE: u32 = 1 << 1;
    /// The region can be mmap'd from the device fd.
    pub const MMAP: u32 = 1 << 2;
}

/// Region indices of a PCI device (`VFIO_PCI_*_REGION_INDEX`).
pub mod pci_region {
    /// BAR 0 (the igb's register space).
    pub const BAR0: u32 = 0;
    /// PCI configuration space.
    pub const CONFIG: u32 = 7;
}

/// Interrupt indices of a PCI device (`VFIO_PCI_*_IRQ_INDEX`).
pub mod pci_irq {
    /// Legacy INTx.
    pub const INTX: u32 = 0;
    /// MSI.
    pub const MSI: u32 = 1;
    /// MSI-X.
    pub const MSIX: u32 = 2;
}

/// `vfio_irq_set.flags`.
pub mod irq_flags {
    /// No data follows the header.
    pub const DATA_NONE: u32 = 1 << 0;
    /// One bool (u8) per interrupt follows.
    pub const DATA_BOOL: u32 = 1 << 1;
    /// One eventfd (i32) per interrupt follows; -1 unassigns.
    pub const DATA_EVENTFD: u32 = 1 << 2;
    /// Mask the interrupts.
    pub const ACTION_MASK: u32 = 1 << 3;
    /// Unmask the interrupts.
    pub const ACTION_UNMASK: u32 = 1 << 4;
    /// Trigger (or, with an eventfd, signal it when the device does).
    pub const ACTION_TRIGGER: u32 = 1 << 5;
}

/// `vfio_iommu_type1_dma_map.flags`.
pub mod dma_flags {
    /// The device may read the memory.
    pub const READ: u32 = 1 << 0;
    /// The device may write the memory.
    pub const WRITE: u32 = 1 << 1;
}

/// PCI configuration space: the command register and its bus-master bit.
pub mod pci_config {
    /// Offset of the 16-bit command register.
    pub const COMMAND: u64 = 0x04;
    /// Command register: the device may master the bus (do DMA).
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    /// Command register: memory space decoding (BAR access) enabled.
    pub const COMMAND_MEMORY: u16 = 1 << 1;
}

/// The ioctl numbers: `_IO(VFIO_TYPE, VFIO_BASE + n)`, no size or direction
/// bits (the structs carry their own `argsz`).
pub mod nr {
    /// `VFIO_TYPE`, the ioctl "magic": `';'`.
    const TYPE: u32 = b';' as u32;
    /// `VFIO_BASE`.
    const BASE: u32 = 100;

    const fn io(n: u32) -> u32 {
        (TYPE << 8) | (BASE + n)
    }

    pub const GET_API_VERSION: u32 = io(0);
    pub const CHECK_EXTENSION: u32 = io(1);
    pub const SET_IOMMU: u32 = io(2);
    pub const GROUP_GET_STATUS: u32 = io(3);
    pub const GROUP_SET_CONTAINER: u32 = io(4);
    pub const GROUP_UNSET_CONTAINER: u32 = io(5);
    pub const GROUP_GET_DEVICE_FD: u32 = io(6);
    pub const DEVICE_GET_INFO: u32 = io(7);
    pub const DEVICE_GET_REGION_INFO: u32 = io(8);
    pub const DEVICE_GET_IRQ_INFO: u32 = io(9);
    pub const DEVICE_SET_IRQS: u32 = io(10);
    pub const DEVICE_RESET: u32 = io(11);
    pub const IOMMU_GET_INFO: u32 = io(12);
    pub const IOMMU_MAP_DMA: u32 = io(13);
    pub const IOMMU_UNMAP_DMA: u32 = io(14);
}

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    pub argsz: u32,
    /// [`group_flags`].
    pub flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    pub argsz: u32,
    /// `VFIO_DEVICE_FLAGS_*` (bit 1: PCI, bit 0: reset supported).
    pub flags: u32,
    /// Number of regions (a PCI device: 9 and up).
    pub num_regions: u32,
    /// Number of interrupt indices.
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `VFIO_DEVICE_FLAGS_RESET`: [`device_reset`] is supported.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    pub argsz: u32,
    /// [`region_flags`].
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    /// Region size in bytes (0: the region does not exist).
    pub size: u64,
    /// Offset of the region in the device fd, for pread/pwrite/mmap.
    pub offset: u64,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DmaMap {
    pub argsz: u32,
    /// [`dma_flags`].
    pub flags: u32,
    /// Process virtual address of the memory.
    pub vaddr: u64,
    /// The address the device uses for it.
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    /// In: bytes to unmap; out: bytes unmapped.
    pub size: u64,
}

/// The fixed part of `struct vfio_irq_set` (the data follows it).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IrqSet {
    pub argsz: u32,
    /// [`irq_flags`].
    pub flags: u32,
    /// [`pci_irq`].
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

/// The argsz of a struct (all of them are a few dozen bytes).
fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// ioctl with no argument (or an integer one); returns the result.
fn ioctl_val(fd: BorrowedFd<'_>, req: u32, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the request takes an integer argument (or none), so the kernel
    // reads no memory of ours; the fd is open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// ioctl whose argument is a pointer to `arg` (read and/or written by the kernel).
///
/// # Safety
/// `req` must be an ioctl that reads/writes at most `size_of::<T>()` bytes
/// at the pointer (or `argsz` bytes, which callers set to at most that).
unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: u32, arg: *mut T) -> io::Result<i32> {
    // SAFETY: the caller guarantees the kernel stays within `*arg`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `VFIO_GET_API_VERSION` on the container.
pub fn get_api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    ioctl_val(container, nr::GET_API_VERSION, 0)
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports an IOMMU type.
pub fn check_extension(container: BorrowedFd<'_>, ext: u32) -> io::Result<bool> {
    ioctl_val(container, nr::CHECK_EXTENSION, libc::c_ulong::from(ext)).map(|r| r > 0)
}

/// `VFIO_SET_IOMMU`: picks the container's IOMMU model (after a group is set).
pub fn set_iommu(container: BorrowedFd<'_>, ty: u32) -> io::Result<()> {
    ioctl_val(container, nr::SET_IOMMU, libc::c_ulong::from(ty)).map(drop)
}

/// `VFIO_GROUP_GET_STATUS`.
pub fn group_get_status(group: BorrowedFd<'_>) -> io::Result<GroupStatus> {
    let mut st = GroupStatus {
        argsz: argsz::<GroupStatus>(),
        flags: 0,
    };
    // SAFETY: the kernel writes a vfio_group_status, which `st` is.
    unsafe { ioctl_ptr(group, nr::GROUP_GET_STATUS, &mut st) }?;
    Ok(st)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to the container.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let mut fd: RawFd = container.as_raw_fd();
    // SAFETY: the kernel reads one int (the container fd) at the pointer.
    unsafe { ioctl_ptr(group, nr::GROUP_SET_CONTAINER, &mut fd) }.map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: the device's fd, by its name (the PCI address).
pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the kernel reads a NUL-terminated string at the pointer.
    let fd = unsafe { ioctl_ptr(group, nr::GROUP_GET_DEVICE_FD, name.as_ptr().cast_mut()) }?;
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO`.
pub fn device_get_info(device: BorrowedFd<'_>) -> io::Result<DeviceInfo> {
    let mut info = DeviceInfo {
        argsz: argsz::<DeviceInfo>(),
        ..DeviceInfo::default()
    };
    // SAFETY: the kernel writes at most argsz bytes of a vfio_device_info.
    unsafe { ioctl_ptr(device, nr::DEVICE_GET_INFO, &mut info) }?;
    Ok(info)
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index` ([`pci_region`]).
pub fn device_get_region_info(device: BorrowedFd<'_>, index: u32) -> io::Result<RegionInfo> {
    let mut info = RegionInfo {
        argsz: argsz::<RegionInfo>(),
        index,
        ..RegionInfo::default()
    };
    // SAFETY: the kernel writes at most argsz bytes of a vfio_region_info
    // (capabilities beyond argsz are only announced, not written).
    unsafe { ioctl_ptr(device, nr::DEVICE_GET_REGION_INFO, &mut info) }?;
    Ok(info)
}

/// `VFIO_DEVICE_RESET`: function-level reset of the device.
pub fn device_reset(device: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_val(device, nr::DEVICE_RESET, 0).map(drop)
}

/// `VFIO_DEVICE_SET_IRQS` with eventfds: interrupt `start + i` of `index`
/// signals `fds[i]` (-1 unassigns it).
pub fn device_set_irq_eventfds(
    device: BorrowedFd<'_>,
    index: u32,
    start: u32,
    fds: &[RawFd],
) -> io::Result<()> {
    // The header then the fds, in one u32-aligned buffer.
    let hdr_words = std::mem::size_of::<IrqSet>() / 4;
    let mut buf = vec![0u32; hdr_words + fds.len()];
    let hdr = IrqSet {
        argsz: (buf.len() * 4) as u32,
        flags: irq_flags::DATA_EVENTFD | irq_flags::ACTION_TRIGGER,
        index,
        start,
        count: fds.len() as u32,
    };
    buf[0] = hdr.argsz;
    buf[1] = hdr.flags;
    buf[2] = hdr.index;
    buf[3] = hdr.start;
    buf[4] = hdr.count;
    for (w, &fd) in buf[hdr_words..].iter_mut().zip(fds) {
        *w = fd as u32;
    }
    // SAFETY: the kernel reads argsz bytes: the header and `count` fds, all in `buf`.
    unsafe { ioctl_ptr(device, nr::DEVICE_SET_IRQS, buf.as_mut_ptr()) }.map(drop)
}

/// `VFIO_DEVICE_SET_IRQS` with no data and count 0: disables every
/// interrupt of `index`.
pub fn device_disable_irqs(device: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    let mut set = IrqSet {
        argsz: argsz::<IrqSet>(),
        flags: irq_flags::DATA_NONE | irq_flags::ACTION_TRIGGER,
        index,
        start: 0,
        count: 0,
    };
    // SAFETY: the kernel reads the header only (no data for count 0).
    unsafe { ioctl_ptr(device, nr::DEVICE_SET_IRQS, &mut set) }.map(drop)
}

/// `VFIO_IOMMU_MAP_DMA`: lets the device reach `size` bytes at `vaddr` as
/// `iova` (read and write); the kernel pins the pages.
pub fn iommu_map_dma(
    container: BorrowedFd<'_>,
    vaddr: u64,
    iova: u64,
    size: u64,
) -> io::Result<()> {
    let mut map = DmaMap {
        argsz: argsz::<DmaMap>(),
        flags: dma_flags::READ | dma_flags::WRITE,
        vaddr,
        iova,
        size,
    };
    // SAFETY: the kernel reads a vfio_iommu_type1_dma_map; the memory it
    // maps is the caller's to keep alive until unmapped.
    unsafe { ioctl_ptr(container, nr::IOMMU_MAP_DMA, &mut map) }.map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA`; returns the bytes unmapped.
pub fn iommu_unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = DmaUnmap {
        argsz: argsz::<DmaUnmap>(),
        flags: 0,
        iova,
        size,
    };
    // SAFETY: the kernel reads and updates a vfio_iommu_type1_dma_unmap.
    unsafe { ioctl_ptr(container, nr::IOMMU_UNMAP_DMA, &mut unmap) }?;
    Ok(unmap.size)
}

/// Reads `buf.len()` bytes of a region (config space) at `off`.
pub fn region_read(
    device: BorrowedFd<'_>,
    region: &RegionInfo,
    off: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    if off + buf.len() as u64 > region.size {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: pread into a buffer we own, of its length.
    let n = unsafe {
        libc::pread(
            device.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            (region.offset + off) as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(())
}

/// Writes `buf` to a region (config space) at `off`.
pub fn region_write(
    device: BorrowedFd<'_>,
    region: &RegionInfo,
    off: u64,
    buf: &[u8],
) -> io::Result<()> {
    if off + buf.len() as u64 > region.size {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: pwrite from a buffer we own, of its length.
    let n = unsafe {
        libc::pwrite(
            device.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            (region.offset + off) as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::from(io::ErrorKind::WriteZero));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn structs_match_linux_vfio_h() {
        use std::mem::size_of;
        assert_eq!(size_of::<GroupStatus>(), 8);
        assert_eq!(size_of::<DeviceInfo>(), 24);
        assert_eq!(size_of::<RegionInfo>(), 32);
        assert_eq!(size_of::<DmaMap>(), 32);
        assert_eq!(size_of::<DmaUnmap>(), 24);
        assert_eq!(size_of::<IrqSet>(), 20);
        assert_eq!(std::mem::offset_of!(RegionInfo, size), 16);
        assert_eq!(std::mem::offset_of!(DmaMap, vaddr), 8);
    }

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // _IO(';', 100) = 0x3b64 ... _IO(';', 114) = 0x3b72.
        assert_eq!(nr::GET_API_VERSION, 0x3b64);
        assert_eq!(nr::CHECK_EXTENSION, 0x3b65);
        assert_eq!(nr::SET_IOMMU, 0x3b66);
        assert_eq!(nr::GROUP_GET_STATUS, 0x3b67);
        assert_eq!(nr::GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(nr::GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(nr::DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(nr::DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(nr::DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(nr::DEVICE_RESET, 0x3b6f);
        assert_eq!(nr::IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(nr::IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn ioctls_on_a_non_vfio_fd_fail_cleanly() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_fd();
        assert!(get_api_version(fd).is_err());
        assert!(check_extension(fd, iommu::TYPE1V2).is_err());
        assert!(group_get_status(fd).is_err());
        assert!(group_get_device_fd(fd, "0000:03:00.0").is_err());
        assert!(group_get_device_fd(fd, "bad\0name").is_err());
        assert!(device_get_info(fd).is_err());
        assert!(device_get_region_info(fd, pci_region::BAR0).is_err());
        assert!(device_reset(fd).is_err());
        assert!(device_set_irq_eventfds(fd, pci_irq::MSIX, 0, &[-1]).is_err());
        assert!(device_disable_irqs(fd, pci_irq::MSIX).is_err());
        assert!(iommu_map_dma(fd, 0x1000, 0, 4096).is_err());
        assert!(iommu_unmap_dma(fd, 0, 4096).is_err());
        let region = RegionInfo {
            size: 16,
            ..RegionInfo::default()
        };
        let mut b = [0u8; 4];
        assert!(
            region_read(fd, &region, 14, &mut b).is_err(),
            "out of the region"
        );
    }
}
