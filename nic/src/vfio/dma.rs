//! Memory the device reaches by DMA, besides the packet buffers: the
//! descriptor rings, in page-aligned anonymous mappings; and where the
//! device sees each region (its IOVA).
//!
//! IOVAs are handed out from a small fixed plan rather than equal to the
//! process's virtual addresses: an emulated IOMMU may have only 39 address
//! bits, less than a user-space address needs.

use std::io;
use std::ptr::NonNull;

/// IOVA of the packet-buffer region (buffer `i` at `PKT_IOVA + i * BUF_SIZE`).
pub const PKT_IOVA: u64 = 1 << 32;
/// IOVA of the first descriptor ring; rings follow at [`RING_IOVA_STRIDE`].
pub const RING_IOVA: u64 = 1 << 24;
/// Distance between two rings' IOVAs (a ring of 4096 descriptors is 64 KiB).
pub const RING_IOVA_STRIDE: u64 = 1 << 20;

/// A zeroed, page-aligned anonymous mapping, unmapped on drop.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value; the raw pointer is only an
// address (users access the memory with volatile operations).
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// Maps `len` bytes (rounded up to whole pages).
    pub fn new(len: usize) -> io::Result<DmaBuf> {
        let page = page_size();
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(DmaBuf { ptr, len })
    }

    /// Start of the memory.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (at least one page); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_buf_is_zeroed_page_aligned_and_whole_pages() {
        let b = DmaBuf::new(100).unwrap();
        assert_eq!(b.as_ptr() as usize % page_size(), 0);
        assert_eq!(b.len(), page_size());
        // SAFETY: within the mapping.
        let s = unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) };
        assert!(s.iter().all(|&x| x == 0));
    }
}
