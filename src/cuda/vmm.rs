//! Memory that CUDA allocates and owns, exportable to other APIs: the virtual memory
//! management (VMM) API with a POSIX-fd shareable handle.
//!
//! `cuMemCreate` makes the physical allocation (its size rounded up to the device's
//! granularity), `cuMemAddressReserve` + `cuMemMap` + `cuMemSetAccess` give CUDA a
//! read-write device pointer to it, and `cuMemExportToShareableHandle` hands out fds that
//! Vulkan imports as `VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT` (NVIDIA's
//! simpleVulkanMMAP sample does the same). The import is never dedicated: the memory was not
//! made for one Vulkan resource.
//!
//! # Ownership
//! [`VmmAllocation`] owns the CUDA objects and frees them in the reverse order of making
//! them (`cuMemUnmap` -> `cuMemAddressFree` -> `cuMemRelease`) when its last clone and
//! the last [`MappedBuffer`] into it are gone. An importer holds its own reference to the
//! physical memory through the fd it imported (the driver frees the memory when the last
//! mapping, handle and import are gone: `cuMemRelease`'s documentation), so a Vulkan import
//! never holds the CUDA object and the CUDA object never waits for Vulkan.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext};

use super::context::bind;
use super::memory::MappedBuffer;
use super::{raw, Context};
use crate::external::MemoryImport;
use crate::{Error, Result};

/// The allocation description `cuMemCreate` and `cuMemGetAllocationGranularity` take: pinned
/// device memory on `device`, exportable as a POSIX fd. Built field by field (the struct
/// has enum fields, so it must never be zero-initialised).
fn allocation_prop(device: sys::CUdevice) -> sys::CUmemAllocationProp {
    sys::CUmemAllocationProp {
        type_: sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes:
            sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
        location: sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: device,
        },
        win32HandleMetaData: std::ptr::null_mut(),
        allocFlags: sys::CUmemAllocationProp_st__bindgen_ty_1 {
            compressionType: 0,
            gpuDirectRDMACapable: 0,
            usage: 0,
            reserved: [0; 4],
        },
    }
}

/// Rounds a requested size up to a multiple of `granularity`; refuses 0 and sizes that do
/// not fit this platform's `usize` once rounded.
fn rounded_size(size: u64, granularity: u64) -> Result<u64> {
    if size == 0 {
        return Err(Error::invalid("size", "0 bytes", "at least 1 byte"));
    }
    let rounded = size
        .div_ceil(granularity)
        .checked_mul(granularity)
        .filter(|&r| usize::try_from(r).is_ok());
    rounded.ok_or_else(|| {
        Error::invalid(
            "size",
            format!("{size} bytes overflow once rounded up to the {granularity}-byte granularity"),
            format!(
                "at most {} bytes",
                (usize::MAX as u64 / granularity) * granularity
            ),
        )
    })
}

/// Checks one device attribute that must be non-zero for an exportable VMM allocation.
fn require_attribute(
    ctx: &CudaContext,
    attribute: sys::CUdevice_attribute,
    what: &str,
) -> Result<()> {
    let value = ctx
        .attribute(attribute)
        .map_err(|e| Error::cuda("cuDeviceGetAttribute", e))?;
    if value != 0 {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: what.to_owned(),
        reason: format!("{attribute:?} is 0 on CUDA device #{}", ctx.ordinal()),
    })
}

/// The smallest size and alignment (bytes) of an exportable allocation on `cu`'s device
/// (`cuMemGetAllocationGranularity`, `CU_MEM_ALLOC_GRANULARITY_MINIMUM`; 2 MiB on current
/// NVIDIA GPUs). [`VmmAllocation::new`] rounds every size up to a multiple of it.
///
/// # Errors
/// [`Error::Unsupported`] when the device has no VMM or no POSIX-fd export (see
/// [`VmmAllocation::new`]), [`Error::Cuda`] when a query fails.
pub fn vmm_granularity(cu: &Context) -> Result<u64> {
    let ctx = cu.cuda();
    bind(ctx)?;
    require_attribute(
        ctx,
        sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED,
        "CUDA virtual memory management (cuMemCreate)",
    )?;
    require_attribute(
        ctx,
        sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
        "CUDA memory exported as a POSIX fd (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)",
    )?;
    let prop = allocation_prop(ctx.cu_device());
    // SAFETY: `prop` is a complete description of a device allocation.
    let g = unsafe {
        raw::mem_get_allocation_granularity(
            &prop,
            sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
        )
    }
    .map_err(|e| Error::cuda("cuMemGetAllocationGranularity", e))?;
    Ok(g.max(1) as u64)
}

/// Device memory that CUDA allocated (`cuMemCreate`), mapped read-write for CUDA and
/// exportable as a POSIX fd ([`VmmAllocation::export`]).
///
/// Cloning is cheap and shares the allocation. It is unmapped and released when the last
/// clone and the last [`MappedBuffer`] made from it are dropped (see the module docs for
/// importers). Dropping does not wait for GPU work that uses it.
#[derive(Clone)]
pub struct VmmAllocation {
    inner: Arc<VmmInner>,
}

struct VmmInner {
    handle: sys::CUmemGenericAllocationHandle,
    ptr: sys::CUdeviceptr,
    size: u64,
    requested: u64,
    ctx: Arc<CudaContext>,
}

// SAFETY: the allocation handle and device address are plain driver values, usable from any
// thread once the context is bound, which every use here does first.
unsafe impl Send for VmmInner {}
// SAFETY: as above; shared access only reads them.
unsafe impl Sync for VmmInner {}

impl Drop for VmmInner {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // `size` fits a usize: checked when the allocation was made.
        let size = self.size as usize;
        // SAFETY: `ptr..ptr + size` is the one mapping made by `new`; no `MappedBuffer`
        // points into it any more (each holds a clone); unmapped only here, once.
        self.ctx
            .record_err(unsafe { raw::mem_unmap(self.ptr, size) });
        // SAFETY: the reservation made by `new` with this size, now empty; freed once.
        self.ctx
            .record_err(unsafe { raw::mem_address_free(self.ptr, size) });
        // SAFETY: the handle made by `new`, released once; importers keep their own
        // reference to the memory.
        self.ctx
            .record_err(unsafe { raw::mem_release(self.handle) });
    }
}

impl fmt::Debug for VmmAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmmAllocation")
            .field("ptr", &format_args!("{:#x}", self.inner.ptr))
            .field("size", &self.inner.size)
            .field("requested", &self.inner.requested)
            .field("device", &self.inner.ctx.ordinal())
            .finish()
    }
}

/// Owns what [`VmmAllocation::new`] made so far, undoing it on an early return.
struct Partial<'a> {
    ctx: &'a CudaContext,
    size: usize,
    handle: Option<sys::CUmemGenericAllocationHandle>,
    reserved: Option<sys::CUdeviceptr>,
    mapped: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if let (true, Some(ptr)) = (self.mapped, self.reserved) {
            // SAFETY: the one mapping made in `new`, not yet handed out; unmapped once.
            self.ctx
                .record_err(unsafe { raw::mem_unmap(ptr, self.size) });
        }
        if let Some(ptr) = self.reserved {
            // SAFETY: the reservation made in `new`, now empty; freed once.
            self.ctx
                .record_err(unsafe { raw::mem_address_free(ptr, self.size) });
        }
        if let Some(handle) = self.handle {
            // SAFETY: the handle made in `new`, never exported; released once.
            self.ctx.record_err(unsafe { raw::mem_release(handle) });
        }
    }
}

impl VmmAllocation {
    /// Allocates at least `size` bytes on `cu`'s device (rounded up to
    /// [`vmm_granularity`]), maps them read-write for that device, and makes them
    /// exportable as a POSIX fd. The device pointer is aligned to the granularity.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] (`size`): 0, or too large once rounded.
    /// * [`Error::Unsupported`]: the device lacks
    ///   `CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED` (the VMM API) or
    ///   `CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED`, or the platform
    ///   has no POSIX fds.
    /// * [`Error::OutOfMemory`], or [`Error::Cuda`] for another driver failure. Whatever
    ///   was made before the failure is freed.
    pub fn new(cu: &Context, size: u64) -> Result<Self> {
        if !cfg!(unix) {
            return Err(Error::Unsupported {
                what: "exportable CUDA memory".into(),
                reason: "vkcuda exports CUDA memory as POSIX fds only".into(),
            });
        }
        let granularity = vmm_granularity(cu)?;
        let rounded = rounded_size(size, granularity)?;
        let ctx = cu.cuda();
        let mut partial = Partial {
            ctx,
            // Checked by `rounded_size`.
            size: rounded as usize,
            handle: None,
            reserved: None,
            mapped: false,
        };
        let prop = allocation_prop(ctx.cu_device());
        // SAFETY: the context is current (bound by `vmm_granularity`); the size is a
        // non-zero multiple of the granularity; `partial` or `VmmInner` releases it once.
        let handle = unsafe { raw::mem_create(partial.size, &prop) }
            .map_err(|e| Error::cuda_sized("cuMemCreate", e, rounded))?;
        partial.handle = Some(handle);
        // SAFETY: as above, with the granularity as alignment; freed once by `partial` or
        // `VmmInner` after the unmap.
        let ptr = unsafe { raw::mem_address_reserve(partial.size, granularity as usize) }
            .map_err(|e| Error::cuda_sized("cuMemAddressReserve", e, rounded))?;
        partial.reserved = Some(ptr);
        // SAFETY: the reservation is empty and exactly the allocation's size; unmapped by
        // `partial` or `VmmInner` before the reservation is freed.
        unsafe { raw::mem_map(ptr, partial.size, handle) }
            .map_err(|e| Error::cuda_sized("cuMemMap", e, rounded))?;
        partial.mapped = true;
        let access = [sys::CUmemAccessDesc {
            location: prop.location,
            flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        }];
        // SAFETY: the range was just mapped.
        unsafe { raw::mem_set_access(ptr, partial.size, &access) }
            .map_err(|e| Error::cuda("cuMemSetAccess", e))?;
        std::mem::forget(partial);
        Ok(Self {
            inner: Arc::new(VmmInner {
                handle,
                ptr,
                size: rounded,
                requested: size,
                ctx: ctx.clone(),
            }),
        })
    }

    /// Exports the allocation as a new POSIX fd (each call makes one), described for an
    /// importer: the whole rounded size, not dedicated. The fd refers to the physical
    /// memory, so an import outlives this allocation's own handles safely.
    ///
    /// Vulkan imports it as `OPAQUE_FD` memory in the device-local type that its buffer or
    /// image requirements allow (`vkGetMemoryFdPropertiesKHR` is not defined for opaque fds:
    /// VUID-vkGetMemoryFdPropertiesKHR-handleType-00674).
    ///
    /// # Errors
    /// [`Error::Unsupported`] on platforms without POSIX fds; [`Error::Cuda`] when
    /// `cuMemExportToShareableHandle` fails (no fd is left open).
    pub fn export(&self) -> Result<MemoryImport> {
        #[cfg(unix)]
        {
            bind(&self.inner.ctx)?;
            // SAFETY: the handle was made with the POSIX-fd handle type and is alive (held
            // by `self`).
            let fd = unsafe { raw::mem_export_to_fd(self.inner.handle) }
                .map_err(|e| Error::cuda("cuMemExportToShareableHandle", e))?;
            Ok(MemoryImport {
                handle: crate::external::MemoryHandle::OpaqueFd(fd),
                size: self.inner.size,
                dedicated: false,
                memory_type: None,
            })
        }
        #[cfg(not(unix))]
        Err(Error::Unsupported {
            what: "exportable CUDA memory".into(),
            reason: "vkcuda exports CUDA memory as POSIX fds only".into(),
        })
    }

    /// A read-write [`MappedBuffer`] over `range` (bytes of the allocation). It holds the
    /// allocation alive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty range (`range`), an end past the allocation
    /// (`range.end`) or a start that is not a multiple of
    /// [`MAP_OFFSET_ALIGNMENT`](super::MAP_OFFSET_ALIGNMENT) (`range.start`).
    pub fn map(&self, range: Range<u64>) -> Result<MappedBuffer> {
        MappedBuffer::in_vmm(self.clone(), range)
    }

    /// The allocation's size: the requested size rounded up to the granularity.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The size that was asked for.
    pub fn requested_size(&self) -> u64 {
        self.inner.requested
    }

    /// The device address of the first byte (aligned to the granularity).
    pub fn cu_device_ptr(&self) -> sys::CUdeviceptr {
        self.inner.ptr
    }

    /// The CUDA context it was allocated in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    #[test]
    fn sizes_round_up_to_the_granularity() {
        const G: u64 = 2 << 20;
        assert_eq!(rounded_size(1, G).unwrap(), G);
        assert_eq!(rounded_size(G, G).unwrap(), G);
        assert_eq!(rounded_size(G + 1, G).unwrap(), 2 * G);
    }

    #[test]
    fn zero_and_overflowing_sizes_are_refused() {
        let (arg, _, _) = invalid_arg(rounded_size(0, 4096));
        assert_eq!(arg, "size");
        let (arg, problem, _) = invalid_arg(rounded_size(u64::MAX - 1, 4096));
        assert_eq!(arg, "size");
        assert!(problem.contains("granularity"), "{problem}");
    }

    #[test]
    fn the_description_asks_for_pinned_device_memory_with_an_fd() {
        let prop = allocation_prop(3);
        assert_eq!(
            prop.requestedHandleTypes,
            sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
        );
        assert_eq!(
            prop.type_,
            sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
        );
        assert_eq!(
            prop.location.type_,
            sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
        );
        assert_eq!(prop.location.id, 3);
    }
}
