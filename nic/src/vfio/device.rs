//! Opening a PCI device through VFIO by its address (`0000:03:00.0`):
//! sysfs tells its IOMMU group and driver, then the container and group are
//! opened, the group checked viable and attached, the IOMMU type set and
//! the device fd taken. Each way this commonly fails has its own error,
//! saying how to fix the setup.
//!
//! The sysfs and /dev/vfio roots are injectable ([`Roots`]) so the checks
//! that need no device run in tests.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::ring::Regs;
use super::sys;

/// The driver a device must be bound to.
pub const VFIO_DRIVER: &str = "vfio-pci";

/// Drivers that may hold other devices of a viable group besides
/// vfio-pci (none at all is fine too): bridges and stubs.
const HARMLESS_DRIVERS: &[&str] = &[VFIO_DRIVER, "pci-stub", "pcieport"];

/// Where sysfs and the VFIO device nodes are (tests point them elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/dev/vfio`.
    pub dev_vfio: PathBuf,
    /// `/proc/meminfo`, for the hugepage check.
    pub meminfo: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev_vfio: PathBuf::from("/dev/vfio"),
            meminfo: PathBuf::from("/proc/meminfo"),
        }
    }
}

impl Roots {
    /// `/sys/bus/pci/devices/BDF`.
    pub fn device_dir(&self, bdf: &str) -> PathBuf {
        self.sys.join("bus/pci/devices").join(bdf)
    }
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("bad PCI address {0:?}: expected DOMAIN:BUS:DEVICE.FUNCTION in hex, e.g. 0000:03:00.0 (`lspci -D` lists them)")]
    BadAddress(String),
    #[error("no PCI device {bdf}: {} does not exist (`lspci -D` lists the devices)", path.display())]
    NoSuchDevice { bdf: String, path: PathBuf },
    #[error("PCI device {bdf} has no IOMMU group: the IOMMU is off. Enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD); in qemu add `-device intel-iommu` with `-machine q35,kernel-irqchip=split`")]
    NoIommuGroup { bdf: String },
    #[error("{}: VFIO is not available. Load it with:\n    modprobe vfio-pci\n(and check the IOMMU is on: intel_iommu=on or amd_iommu=on)", path.display())]
    NoVfio { path: PathBuf },
    #[error("PCI device {bdf} is {}, not to vfio-pci. Bind it (as root) with:\n{commands}", match driver { Some(d) => format!("bound to {d}"), None => "bound to no driver".to_string() })]
    NotBound {
        bdf: String,
        driver: Option<String>,
        commands: String,
    },
    #[error("IOMMU group {group} of {bdf} is not viable: every device in the group must be bound to vfio-pci (or to no driver). These are not: {}. Unbind them, or bind them to vfio-pci the same way", others.join(", "))]
    GroupNotViable {
        bdf: String,
        group: u32,
        others: Vec<String>,
    },
    #[error("no permission to open {}: run as root, or give your user the device node (chown or a udev rule)", path.display())]
    Permission { path: PathBuf },
    #[error("{} is busy: another process (a VM, another rbypass) has the IOMMU group open", path.display())]
    Busy { path: PathBuf },
    #[error(
        "the kernel's VFIO API version is {0}, this program speaks version 0 (VFIO_API_VERSION)"
    )]
    ApiVersion(i32),
    #[error(
        "the VFIO container supports no type-1 IOMMU (is this an x86 host with VT-d or AMD-Vi on?)"
    )]
    NoType1Iommu,
    #[error("no hugepages: HugePages_Free is 0. Reserve some with:\n    echo 512 > /proc/sys/vm/nr_hugepages")]
    NoHugepages,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Wraps an io::Error with what was being done.
fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VfioError {
    let what = what.into();
    move |source| VfioError::Io { what, source }
}

/// Checks and normalizes a PCI address: `03:00.0` gets domain `0000`,
/// hex digits are lower-cased.
pub fn parse_bdf(s: &str) -> Result<String, VfioError> {
    let bad = || VfioError::BadAddress(s.to_string());
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s.to_string()
    };
    let (domain, rest) = full.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    let hex = |t: &str, len: usize| t.len() == len && t.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && hex(func, 1)) {
        return Err(bad());
    }
    let devn = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
    let funcn = u8::from_str_radix(func, 16).map_err(|_| bad())?;
    if devn > 0x1f || funcn > 7 {
        return Err(bad());
    }
    Ok(full.to_ascii_lowercase())
}

/// The last path component of a symlink's target (`.../drivers/igb` -> `igb`).
fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The driver a device is bound to, if any.
pub fn bound_driver(roots: &Roots, bdf: &str) -> Option<String> {
    link_name(&roots.device_dir(bdf).join("driver"))
}

/// The device's IOMMU group number, if it has one.
pub fn iommu_group(roots: &Roots, bdf: &str) -> Option<u32> {
    link_name(&roots.device_dir(bdf).join("iommu_group"))?
        .parse()
        .ok()
}

/// The other devices of the group and their drivers, sorted.
pub fn group_members(roots: &Roots, group: u32) -> io::Result<Vec<(String, Option<String>)>> {
    let dir = roots
        .sys
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("devices");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let drv = bound_driver(roots, &name);
        out.push((name, drv));
    }
    out.sort();
    Ok(out)
}

/// The commands that bind `bdf` to vfio-pci (unbinding `driver` first).
pub fn bind_commands(roots: &Roots, bdf: &str, driver: Option<&str>) -> String {
    let pci = roots.sys.join("bus/pci");
    let dev = pci.join("devices").join(bdf);
    let mut c = String::from("    modprobe vfio-pci\n");
    if driver.is_some() {
        c += &format!("    echo {bdf} > {}\n", dev.join("driver/unbind").display());
    }
    c += &format!(
        "    echo {VFIO_DRIVER} > {}\n",
        dev.join("driver_override").display()
    );
    c += &format!("    echo {bdf} > {}", pci.join("drivers_probe").display());
    c
}

/// Everything sysfs can tell before opening anything: the device exists,
/// has an IOMMU group, is bound to vfio-pci, and no other device of its
/// group is held by a host driver. Returns the group number.
pub fn check_sysfs(roots: &Roots, bdf: &str) -> Result<u32, VfioError> {
    let dir = roots.device_dir(bdf);
    if !dir.exists() {
        return Err(VfioError::NoSuchDevice {
            bdf: bdf.to_string(),
            path: dir,
        });
    }
    let group = iommu_group(roots, bdf).ok_or_else(|| VfioError::NoIommuGroup {
        bdf: bdf.to_string(),
    })?;
    let driver = bound_driver(roots, bdf);
    if driver.as_deref() != Some(VFIO_DRIVER) {
        return Err(VfioError::NotBound {
            bdf: bdf.to_string(),
            commands: bind_commands(roots, bdf, driver.as_deref()),
            driver,
        });
    }
    let others = not_viable_members(roots, bdf, group);
    if !others.is_empty() {
        return Err(VfioError::GroupNotViable {
            bdf: bdf.to_string(),
            group,
            others,
        });
    }
    Ok(group)
}

/// Devices of the group bound to a driver that makes it not viable, as
/// `BDF (driver)`.
fn not_viable_members(roots: &Roots, bdf: &str, group: u32) -> Vec<String> {
    group_members(roots, group)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, drv)| {
            name != bdf
                && drv
                    .as_deref()
                    .is_some_and(|d| !HARMLESS_DRIVERS.contains(&d))
        })
        .map(|(name, drv)| format!("{name} ({})", drv.unwrap_or_default()))
        .collect()
}

/// Whether free hugepages exist, from a meminfo-format file.
pub fn hugepages_free(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        l.strip_prefix("HugePages_Free:")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Fails with [`VfioError::NoHugepages`] if none are free (for a no-IOMMU
/// setup, where DMA memory must be physically contiguous).
pub fn require_hugepages(roots: &Roots) -> Result<(), VfioError> {
    let text = std::fs::read_to_string(&roots.meminfo)
        .map_err(io_err(format!("read {}", roots.meminfo.display())))?;
    match hugepages_free(&text) {
        Some(n) if n > 0 => Ok(()),
        _ => Err(VfioError::NoHugepages),
    }
}

/// Opens a device node, mapping the usual failures to clear errors.
fn open_node(path: &Path) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => VfioError::NoVfio {
                path: path.to_path_buf(),
            },
            Some(libc::EACCES) | Some(libc::EPERM) => VfioError::Permission {
                path: path.to_path_buf(),
            },
            Some(libc::EBUSY) => VfioError::Busy {
                path: path.to_path_buf(),
            },
            _ => VfioError::Io {
                what: format!("open {}", path.display()),
                source: e,
            },
        })
}

/// An open VFIO device: its container (the IOMMU context), group and fd.
pub struct VfioDevice {
    bdf: String,
    group_no: u32,
    container: File,
    // Kept open: closing the group detaches it from the container.
    _group: File,
    device: OwnedFd,
    info: sys::DeviceInfo,
}

impl std::fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDevice")
            .field("bdf", &self.bdf)
            .field("group", &self.group_no)
            .finish()
    }
}

impl VfioDevice {
    /// Opens the device at PCI address `addr` with the real roots.
    pub fn open(addr: &str) -> Result<VfioDevice, VfioError> {
        Self::open_in(&Roots::default(), addr)
    }

    /// Opens the device at `addr`, sysfs and /dev/vfio under `roots`.
    pub fn open_in(roots: &Roots, addr: &str) -> Result<VfioDevice, VfioError> {
        let bdf = parse_bdf(addr)?;
        let group_no = check_sysfs(roots, &bdf)?;
        let container_path = roots.dev_vfio.join("vfio");
        if !roots.dev_vfio.exists() || !container_path.exists() {
            return Err(VfioError::NoVfio {
                path: container_path,
            });
        }
        let container = open_node(&container_path)?;
        let version = sys::get_api_version(container.as_fd()).map_err(io_err(format!(
            "VFIO_GET_API_VERSION on {}",
            container_path.display()
        )))?;
        if version != sys::API_VERSION {
            return Err(VfioError::ApiVersion(version));
        }
        let iommu_type = [sys::iommu::TYPE1V2, sys::iommu::TYPE1]
            .into_iter()
            .find(|&t| sys::check_extension(container.as_fd(), t).unwrap_or(false))
            .ok_or(VfioError::NoType1Iommu)?;
        let group_path = roots.dev_vfio.join(group_no.to_string());
        let group = open_node(&group_path)?;
        let status = sys::group_get_status(group.as_fd()).map_err(io_err(format!(
            "VFIO_GROUP_GET_STATUS on {}",
            group_path.display()
        )))?;
        if status.flags & sys::group_flags::VIABLE == 0 {
            let mut others = not_viable_members(roots, &bdf, group_no);
            if others.is_empty() {
                others.push("(sysfs names none: look in /sys/kernel/iommu_groups)".into());
            }
            return Err(VfioError::GroupNotViable {
                bdf,
                group: group_no,
                others,
            });
        }
        sys::group_set_container(group.as_fd(), container.as_fd())
            .map_err(io_err("VFIO_GROUP_SET_CONTAINER"))?;
        sys::set_iommu(container.as_fd(), iommu_type).map_err(io_err("VFIO_SET_IOMMU"))?;
        let device = sys::group_get_device_fd(group.as_fd(), &bdf)
            .map_err(io_err(format!("VFIO_GROUP_GET_DEVICE_FD {bdf}")))?;
        let info = sys::device_get_info(device.as_fd()).map_err(io_err("VFIO_DEVICE_GET_INFO"))?;
        Ok(VfioDevice {
            bdf,
            group_no,
            container,
            _group: group,
            device,
            info,
        })
    }

    /// The normalized PCI address.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    /// The device's region and interrupt counts.
    pub fn info(&self) -> sys::DeviceInfo {
        self.info
    }

    /// Lets the device do DMA: sets bus master (and memory decoding) in the
    /// PCI command register.
    pub fn enable_bus_master(&self) -> Result<(), VfioError> {
        let cfg = sys::device_get_region_info(self.device.as_fd(), sys::pci_region::CONFIG)
            .map_err(io_err("config space region info"))?;
        let mut cmd = [0u8; 2];
        sys::region_read(
            self.device.as_fd(),
            &cfg,
            sys::pci_config::COMMAND,
            &mut cmd,
        )
        .map_err(io_err("read the PCI command register"))?;
        let v = u16::from_le_bytes(cmd)
            | sys::pci_config::COMMAND_BUS_MASTER
            | sys::pci_config::COMMAND_MEMORY;
        sys::region_write(
            self.device.as_fd(),
            &cfg,
            sys::pci_config::COMMAND,
            &v.to_le_bytes(),
        )
        .map_err(io_err("write the PCI command register"))
    }

    /// Maps BAR `index` (0 for the igb's registers).
    pub fn map_bar(&self, index: u32) -> Result<Bar, VfioError> {
        let what = format!("BAR{index} of {}", self.bdf);
        let info = sys::device_get_region_info(self.device.as_fd(), index)
            .map_err(io_err(format!("{what}: region info")))?;
        if info.size == 0 || info.flags & sys::region_flags::MMAP == 0 {
            return Err(VfioError::Io {
                what,
                source: io::Error::new(io::ErrorKind::Unsupported, "the region cannot be mapped"),
            });
        }
        // SAFETY: mapping a region the kernel describes for this device fd,
        // at its offset and size; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                info.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.device.as_raw_fd(),
                info.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VfioError::Io {
                what: format!("{what}: mmap"),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Bar {
            ptr: p.cast(),
            len: info.size as usize,
        })
    }

    /// Resets the device (function-level reset), if it supports it.
    pub fn reset(&self) -> Result<(), VfioError> {
        sys::device_reset(self.device.as_fd()).map_err(io_err("VFIO_DEVICE_RESET"))
    }

    /// Lets the device reach `len` bytes at `vaddr` as `iova`.
    ///
    /// The memory must stay mapped while the device may use it (until
    /// [`VfioDevice::unmap_dma`] or this value drops with the container).
    pub fn map_dma(&self, vaddr: *mut u8, iova: u64, len: usize) -> Result<(), VfioError> {
        sys::iommu_map_dma(self.container.as_fd(), vaddr as u64, iova, len as u64).map_err(io_err(
            format!("VFIO_IOMMU_MAP_DMA {len} bytes at IOVA {iova:#x}"),
        ))
    }

    /// Removes a DMA mapping.
    pub fn unmap_dma(&self, iova: u64, len: usize) -> Result<(), VfioError> {
        sys::iommu_unmap_dma(self.container.as_fd(), iova, len as u64)
            .map(drop)
            .map_err(io_err(format!("VFIO_IOMMU_UNMAP_DMA at IOVA {iova:#x}")))
    }

    /// MSI-X vectors `0..fds.len()` signal the given eventfds.
    pub fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<(), VfioError> {
        sys::device_set_irq_eventfds(self.device.as_fd(), sys::pci_irq::MSIX, 0, fds)
            .map_err(io_err("VFIO_DEVICE_SET_IRQS (MSI-X eventfds)"))
    }
}

/// A mapped BAR: 32-bit registers, volatile access. Out-of-range or
/// misaligned offsets read as all ones and ignore writes (as a PCI master
/// abort would) instead of touching memory outside the mapping.
pub struct Bar {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value; register access has no
// thread affinity.
unsafe impl Send for Bar {}

impl Bar {
    fn reg(&self, off: u32) -> Option<*mut u32> {
        let off = off as usize;
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return None;
        }
        // SAFETY: in range and aligned (checked just above).
        Some(unsafe { self.ptr.add(off).cast() })
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty once mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Regs for Bar {
    fn read(&self, off: u32) -> u32 {
        match self.reg(off) {
            // SAFETY: an aligned register inside the BAR mapping.
            Some(p) => unsafe { p.read_volatile() },
            None => !0,
        }
    }

    fn write(&self, off: u32, v: u32) {
        if let Some(p) = self.reg(off) {
            // SAFETY: an aligned register inside the BAR mapping.
            unsafe { p.write_volatile(v) }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map_bar mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys and /dev/vfio in a temporary directory, removed on drop.
    struct Fake {
        dir: PathBuf,
        roots: Roots,
    }

    impl Fake {
        fn new(tag: &str) -> Fake {
            let dir =
                std::env::temp_dir().join(format!("rbypass-vfio-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sys/bus/pci/devices")).unwrap();
            std::fs::create_dir_all(dir.join("sys/bus/pci/drivers")).unwrap();
            std::fs::create_dir_all(dir.join("dev/vfio")).unwrap();
            let roots = Roots {
                sys: dir.join("sys"),
                dev_vfio: dir.join("dev/vfio"),
                meminfo: dir.join("meminfo"),
            };
            Fake { dir, roots }
        }

        /// A device in `group` (if any), bound to `driver` (if any).
        fn device(&self, bdf: &str, group: Option<u32>, driver: Option<&str>) {
            let d = self.roots.device_dir(bdf);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(drv) = driver {
                let dd = self.roots.sys.join("bus/pci/drivers").join(drv);
                std::fs::create_dir_all(&dd).unwrap();
                symlink(&dd, d.join("driver")).unwrap();
            }
            if let Some(g) = group {
                let gd = self.roots.sys.join(format!("kernel/iommu_groups/{g}"));
                std::fs::create_dir_all(gd.join("devices")).unwrap();
                symlink(&gd, d.join("iommu_group")).unwrap();
                symlink(&d, gd.join("devices").join(bdf)).unwrap();
            }
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn addresses_parse_and_normalize() {
        assert_eq!(parse_bdf("0000:03:00.0").unwrap(), "0000:03:00.0");
        assert_eq!(parse_bdf("03:00.0").unwrap(), "0000:03:00.0");
        assert_eq!(parse_bdf("0000:AF:1f.7").unwrap(), "0000:af:1f.7");
        for bad in [
            "",
            "eth0",
            "0000:03:00",
            "0000:3:00.0",
            "0000:03:20.0",
            "0000:03:00.8",
            "0000:03:00.0x",
            "g000:03:00.0",
        ] {
            assert!(
                matches!(parse_bdf(bad), Err(VfioError::BadAddress(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn no_such_device() {
        let f = Fake::new("nodev");
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        assert!(matches!(e, VfioError::NoSuchDevice { .. }), "{e}");
        assert!(e.to_string().contains("no PCI device 0000:03:00.0"), "{e}");
    }

    #[test]
    fn no_iommu_group() {
        let f = Fake::new("nogroup");
        f.device("0000:03:00.0", None, Some("vfio-pci"));
        let e = VfioDevice::open_in(&f.roots, "03:00.0").unwrap_err();
        assert!(matches!(e, VfioError::NoIommuGroup { .. }), "{e}");
        assert!(e.to_string().contains("intel_iommu=on"), "{e}");
    }

    #[test]
    fn not_bound_prints_the_exact_commands() {
        let f = Fake::new("notbound");
        f.device("0000:03:00.0", Some(7), Some("igb"));
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        let VfioError::NotBound {
            ref driver,
            ref commands,
            ..
        } = e
        else {
            panic!("{e}");
        };
        assert_eq!(driver.as_deref(), Some("igb"));
        let s = f.roots.sys.display();
        assert_eq!(
            *commands,
            format!(
                "    modprobe vfio-pci\n    \
                 echo 0000:03:00.0 > {s}/bus/pci/devices/0000:03:00.0/driver/unbind\n    \
                 echo vfio-pci > {s}/bus/pci/devices/0000:03:00.0/driver_override\n    \
                 echo 0000:03:00.0 > {s}/bus/pci/drivers_probe"
            )
        );
        assert!(
            e.to_string().contains("bound to igb, not to vfio-pci"),
            "{e}"
        );
        // With the real roots the commands name the real paths.
        let real = bind_commands(&Roots::default(), "0000:03:00.0", Some("igb"));
        assert!(
            real.contains("echo 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind")
        );
        assert!(real.contains("echo vfio-pci > /sys/bus/pci/devices/0000:03:00.0/driver_override"));
        assert!(real.contains("echo 0000:03:00.0 > /sys/bus/pci/drivers_probe"));
    }

    #[test]
    fn unbound_device_needs_no_unbind() {
        let f = Fake::new("unbound");
        f.device("0000:03:00.0", Some(7), None);
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        let VfioError::NotBound { ref commands, .. } = e else {
            panic!("{e}");
        };
        assert!(!commands.contains("unbind"), "{commands}");
        assert!(e.to_string().contains("bound to no driver"), "{e}");
    }

    #[test]
    fn group_not_viable_names_the_other_devices() {
        let f = Fake::new("viable");
        f.device("0000:03:00.0", Some(7), Some("vfio-pci"));
        f.device("0000:03:00.1", Some(7), Some("igb"));
        f.device("0000:00:1c.0", Some(7), Some("pcieport"));
        f.device("0000:03:00.2", Some(7), None);
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        let VfioError::GroupNotViable {
            group, ref others, ..
        } = e
        else {
            panic!("{e}");
        };
        assert_eq!(group, 7);
        assert_eq!(others, &["0000:03:00.1 (igb)".to_string()]);
        assert!(e.to_string().contains("0000:03:00.1 (igb)"), "{e}");
    }

    #[test]
    fn dev_vfio_missing() {
        let f = Fake::new("novfio");
        f.device("0000:03:00.0", Some(7), Some("vfio-pci"));
        std::fs::remove_dir_all(&f.roots.dev_vfio).unwrap();
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        assert!(matches!(e, VfioError::NoVfio { .. }), "{e}");
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
    }

    #[test]
    fn group_node_missing_or_container_not_vfio() {
        let f = Fake::new("nodes");
        f.device("0000:03:00.0", Some(7), Some("vfio-pci"));
        // A container node that is not VFIO's: the first ioctl fails, named.
        std::fs::write(f.roots.dev_vfio.join("vfio"), b"").unwrap();
        let e = VfioDevice::open_in(&f.roots, "0000:03:00.0").unwrap_err();
        assert!(
            matches!(&e, VfioError::Io { what, .. } if what.contains("VFIO_GET_API_VERSION")),
            "{e}"
        );
    }

    #[test]
    fn sysfs_parsing() {
        let f = Fake::new("parse");
        f.device("0000:03:00.0", Some(12), Some("vfio-pci"));
        f.device("0000:03:00.1", Some(12), Some("igb"));
        assert_eq!(iommu_group(&f.roots, "0000:03:00.0"), Some(12));
        assert_eq!(
            bound_driver(&f.roots, "0000:03:00.1").as_deref(),
            Some("igb")
        );
        assert_eq!(bound_driver(&f.roots, "0000:09:00.0"), None);
        assert_eq!(
            group_members(&f.roots, 12).unwrap(),
            vec![
                ("0000:03:00.0".to_string(), Some("vfio-pci".to_string())),
                ("0000:03:00.1".to_string(), Some("igb".to_string())),
            ]
        );
    }

    #[test]
    fn hugepages_from_meminfo() {
        let text = "MemTotal: 1 kB\nHugePages_Total:     512\nHugePages_Free:      500\n";
        assert_eq!(hugepages_free(text), Some(500));
        assert_eq!(hugepages_free("MemTotal: 1 kB\n"), None);
        let f = Fake::new("huge");
        std::fs::write(&f.roots.meminfo, "HugePages_Free:        0\n").unwrap();
        let e = require_hugepages(&f.roots).unwrap_err();
        assert!(matches!(e, VfioError::NoHugepages), "{e}");
        assert!(e.to_string().contains("nr_hugepages"));
        std::fs::write(&f.roots.meminfo, "HugePages_Free:        3\n").unwrap();
        assert!(require_hugepages(&f.roots).is_ok());
    }
}
