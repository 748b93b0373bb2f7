//! Thin `unsafe fn`s over the CUDA driver calls that cudarc's safe layer lacks: external
//! memory and semaphores, mipmapped arrays, surface and texture objects.
//!
//! One function per driver call, each linking the driver API page it wraps, each returning
//! the driver's code as [`DriverError`] (cudarc's `result` style). The safe RAII types of
//! [`crate::cuda`] are built on these; nothing here owns anything.

use std::mem::MaybeUninit;

use cudarc::driver::{sys, DriverError};

use crate::external::{MemoryHandleType, SemaphoreHandleType};

impl From<MemoryHandleType> for sys::CUexternalMemoryHandleType {
    /// The CUDA enum value `cuImportExternalMemory` expects for this handle type.
    fn from(t: MemoryHandleType) -> Self {
        use sys::CUexternalMemoryHandleType as Cu;
        match t {
            MemoryHandleType::OpaqueFd => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD,
            MemoryHandleType::OpaqueWin32 => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_WIN32,
            MemoryHandleType::OpaqueWin32Kmt => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_WIN32_KMT,
            MemoryHandleType::D3D12Heap => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_D3D12_HEAP,
            MemoryHandleType::D3D12Resource => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_D3D12_RESOURCE,
            MemoryHandleType::D3D11Resource => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_D3D11_RESOURCE,
            MemoryHandleType::D3D11ResourceKmt => {
                Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_D3D11_RESOURCE_KMT
            }
            MemoryHandleType::NvSciBuf => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_NVSCIBUF,
            MemoryHandleType::DmaBufFd => Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_DMABUF_FD,
        }
    }
}

impl From<SemaphoreHandleType> for sys::CUexternalSemaphoreHandleType {
    /// The CUDA enum value `cuImportExternalSemaphore` expects for this handle type.
    fn from(t: SemaphoreHandleType) -> Self {
        use sys::CUexternalSemaphoreHandleType as Cu;
        match t {
            SemaphoreHandleType::OpaqueFd => Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD,
            SemaphoreHandleType::OpaqueWin32 => Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_WIN32,
            SemaphoreHandleType::OpaqueWin32Kmt => {
                Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_WIN32_KMT
            }
            SemaphoreHandleType::D3D12Fence => Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_D3D12_FENCE,
            SemaphoreHandleType::D3D11Fence => Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_D3D11_FENCE,
            SemaphoreHandleType::NvSciSync => Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_NVSCISYNC,
            SemaphoreHandleType::D3D11KeyedMutex => {
                Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_D3D11_KEYED_MUTEX
            }
            SemaphoreHandleType::D3D11KeyedMutexKmt => {
                Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_D3D11_KEYED_MUTEX_KMT
            }
            SemaphoreHandleType::TimelineFd => {
                Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD
            }
            SemaphoreHandleType::TimelineWin32 => {
                Cu::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_WIN32
            }
        }
    }
}

/// [`cuImportExternalMemory`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g52aba3a7f780157d8ba12972b2481735)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `desc` names a live handle of type `desc.type_` to an allocation of exactly
///    `desc.size` bytes, made dedicated exactly when `desc.flags` says so.
///
/// # Errors
/// On success an fd in `desc` belongs to CUDA; on failure it is still the caller's.
pub(crate) unsafe fn import_external_memory(
    desc: &sys::CUDA_EXTERNAL_MEMORY_HANDLE_DESC,
) -> Result<sys::CUexternalMemory, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; the caller guarantees the context and the descriptor.
    unsafe { sys::cuImportExternalMemory(out.as_mut_ptr(), desc) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuExternalMemoryGetMappedBuffer`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1gb9fec33920400c70961b4e33d838da91)
///
/// # Safety
/// 1. The context `mem` was imported in is current on the calling thread.
/// 2. `mem` is a live import and `offset + size` lies within it.
/// 3. The returned pointer is freed with [`mem_free`] before `mem` is destroyed.
pub(crate) unsafe fn external_memory_get_mapped_buffer(
    mem: sys::CUexternalMemory,
    offset: u64,
    size: u64,
) -> Result<sys::CUdeviceptr, DriverError> {
    let desc = sys::CUDA_EXTERNAL_MEMORY_BUFFER_DESC {
        offset,
        size,
        flags: 0,
        reserved: [0; 16],
    };
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable, `desc` is a complete descriptor; the caller guarantees
    // the rest.
    unsafe { sys::cuExternalMemoryGetMappedBuffer(out.as_mut_ptr(), mem, &desc) }.result()?;
    // SAFETY: the call succeeded, so it wrote the pointer.
    Ok(unsafe { out.assume_init() })
}

/// [`cuExternalMemoryGetMappedMipmappedArray`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g02debbfa1b997e4f0e05300a312c17cc)
///
/// # Safety
/// 1. The context `mem` was imported in is current on the calling thread.
/// 2. `mem` is a live import and `desc` describes an image that lies within it.
/// 3. The returned array is destroyed with [`mipmapped_array_destroy`] before `mem` is
///    destroyed.
pub(crate) unsafe fn external_memory_get_mapped_mipmapped_array(
    mem: sys::CUexternalMemory,
    desc: &sys::CUDA_EXTERNAL_MEMORY_MIPMAPPED_ARRAY_DESC,
) -> Result<sys::CUmipmappedArray, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; the caller guarantees the context, import and descriptor.
    unsafe { sys::cuExternalMemoryGetMappedMipmappedArray(out.as_mut_ptr(), mem, desc) }
        .result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuDestroyExternalMemory`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g1b586dda86565617e7e0883b956c7052)
///
/// # Safety
/// 1. Every buffer and mipmapped array mapped from `mem` has been freed.
/// 2. `mem` is destroyed once.
pub(crate) unsafe fn destroy_external_memory(
    mem: sys::CUexternalMemory,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuDestroyExternalMemory(mem) }.result()
}

/// [`cuMemFree`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1g89b3f154e17cc89b6eea277dbdf5c93a)
///
/// # Safety
/// 1. The context `ptr` belongs to is current on the calling thread.
/// 2. `ptr` came from the driver (here: [`external_memory_get_mapped_buffer`]) and is freed
///    once, after the work that uses it.
pub(crate) unsafe fn mem_free(ptr: sys::CUdeviceptr) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuMemFree_v2(ptr) }.result()
}

/// [`cuImportExternalSemaphore`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1ge593134f5f9650474af74db644c4a326)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `desc` names a live synchronization object of type `desc.type_`.
///
/// # Errors
/// On success an fd in `desc` belongs to CUDA; on failure it is still the caller's.
pub(crate) unsafe fn import_external_semaphore(
    desc: &sys::CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC,
) -> Result<sys::CUexternalSemaphore, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; the caller guarantees the context and the descriptor.
    unsafe { sys::cuImportExternalSemaphore(out.as_mut_ptr(), desc) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuSignalExternalSemaphoresAsync`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g86cd6c4b3f439ba786f4e65d1b8107c3)
///
/// # Safety
/// 1. The context of `stream` is current and every semaphore was imported in it.
/// 2. `sems` and `params` have the same length, which fits a `c_uint`.
/// 3. Every semaphore stays alive until the enqueued signal has run.
pub(crate) unsafe fn signal_external_semaphores_async(
    sems: &[sys::CUexternalSemaphore],
    params: &[sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS],
    stream: sys::CUstream,
) -> Result<(), DriverError> {
    debug_assert_eq!(sems.len(), params.len());
    // SAFETY: both arrays hold `sems.len()` elements; the caller guarantees the rest.
    unsafe {
        sys::cuSignalExternalSemaphoresAsync(
            sems.as_ptr(),
            params.as_ptr(),
            sems.len() as std::ffi::c_uint,
            stream,
        )
    }
    .result()
}

/// [`cuWaitExternalSemaphoresAsync`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g063f01a524818ac89bacf521c55a39f0)
///
/// # Safety
/// 1. The context of `stream` is current and every semaphore was imported in it.
/// 2. `sems` and `params` have the same length, which fits a `c_uint`.
/// 3. Every semaphore stays alive until the enqueued wait has run.
pub(crate) unsafe fn wait_external_semaphores_async(
    sems: &[sys::CUexternalSemaphore],
    params: &[sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS],
    stream: sys::CUstream,
) -> Result<(), DriverError> {
    debug_assert_eq!(sems.len(), params.len());
    // SAFETY: both arrays hold `sems.len()` elements; the caller guarantees the rest.
    unsafe {
        sys::cuWaitExternalSemaphoresAsync(
            sems.as_ptr(),
            params.as_ptr(),
            sems.len() as std::ffi::c_uint,
            stream,
        )
    }
    .result()
}

/// [`cuDestroyExternalSemaphore`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXTRES__INTEROP.html#group__CUDA__EXTRES__INTEROP_1g7f13444973542fa50b7e75bcfb2f923d)
///
/// # Safety
/// 1. Every signal and wait enqueued on `sem` has completed.
/// 2. `sem` is destroyed once.
pub(crate) unsafe fn destroy_external_semaphore(
    sem: sys::CUexternalSemaphore,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuDestroyExternalSemaphore(sem) }.result()
}

/// [`cuMipmappedArrayGetLevel`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1g82f276659f05be14820e99346b0f86b7)
///
/// The returned array belongs to `array`: it is never destroyed on its own and is valid
/// while `array` is.
///
/// # Safety
/// 1. The context of `array` is current on the calling thread.
/// 2. `array` is live and `level` is below its level count.
pub(crate) unsafe fn mipmapped_array_get_level(
    array: sys::CUmipmappedArray,
    level: u32,
) -> Result<sys::CUarray, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; the caller guarantees the rest.
    unsafe { sys::cuMipmappedArrayGetLevel(out.as_mut_ptr(), array, level) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuMipmappedArrayDestroy`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1ge0d7c768b6a6963c4d4bde5bbc74f0ad)
///
/// # Safety
/// 1. The context of `array` is current on the calling thread.
/// 2. No surface or texture object refers to `array` or one of its levels any more.
/// 3. `array` is destroyed once.
pub(crate) unsafe fn mipmapped_array_destroy(
    array: sys::CUmipmappedArray,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuMipmappedArrayDestroy(array) }.result()
}

/// [`cuMipmappedArrayCreate`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1ga5d2e311c7f9b0bc6d130af824a40bd3)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. The returned array is destroyed with [`mipmapped_array_destroy`], once.
pub(crate) unsafe fn mipmapped_array_create(
    desc: &sys::CUDA_ARRAY3D_DESCRIPTOR,
    levels: u32,
) -> Result<sys::CUmipmappedArray, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable, `desc` is a complete descriptor; the caller guarantees the
    // context.
    unsafe { sys::cuMipmappedArrayCreate(out.as_mut_ptr(), desc, levels) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuMemcpy3DAsync`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1g79f4f3fde6ae0f529568d881d9e11987)
///
/// # Safety
/// 1. The context of `stream` is current on the calling thread.
/// 2. Every array, device pointer and host pointer in `copy` is live and large enough for
///    the region, and stays so until the copy has completed on `stream`.
pub(crate) unsafe fn memcpy_3d_async(
    copy: &sys::CUDA_MEMCPY3D,
    stream: sys::CUstream,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuMemcpy3DAsync_v2(copy, stream) }.result()
}

/// [`cuSurfObjectCreate`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__SURFOBJECT.html#group__CUDA__SURFOBJECT_1g6bc972c90c9590c9f720b2754e6d079d)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `desc` is of type `CU_RESOURCE_TYPE_ARRAY` and names a live array created with
///    `CUDA_ARRAY3D_SURFACE_LDST`, which outlives the surface object.
pub(crate) unsafe fn surf_object_create(
    desc: &sys::CUDA_RESOURCE_DESC,
) -> Result<sys::CUsurfObject, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; the caller guarantees the context and the descriptor.
    unsafe { sys::cuSurfObjectCreate(out.as_mut_ptr(), desc) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuSurfObjectDestroy`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__SURFOBJECT.html#group__CUDA__SURFOBJECT_1g4c4ec48d203d1e0bb71750ddc4d7aef3)
///
/// # Safety
/// 1. The context of `surf` is current on the calling thread.
/// 2. `surf` is destroyed once, after the work that uses it.
pub(crate) unsafe fn surf_object_destroy(surf: sys::CUsurfObject) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuSurfObjectDestroy(surf) }.result()
}

/// [`cuTexObjectCreate`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__TEXOBJECT.html#group__CUDA__TEXOBJECT_1g1f6dd0f9cbf56db725b1f45aa0a7218a)
/// without a resource view.
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `res` names a live array or mipmapped array that outlives the texture object.
pub(crate) unsafe fn tex_object_create(
    res: &sys::CUDA_RESOURCE_DESC,
    tex: &sys::CUDA_TEXTURE_DESC,
) -> Result<sys::CUtexObject, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable, a null view descriptor is allowed; the caller guarantees
    // the context and the resource.
    unsafe { sys::cuTexObjectCreate(out.as_mut_ptr(), res, tex, std::ptr::null()) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuTexObjectDestroy`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__TEXOBJECT.html#group__CUDA__TEXOBJECT_1gcd522ba5e2d1852aff8c0388f66247fd)
///
/// # Safety
/// 1. The context of `tex` is current on the calling thread.
/// 2. `tex` is destroyed once, after the work that uses it.
pub(crate) unsafe fn tex_object_destroy(tex: sys::CUtexObject) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuTexObjectDestroy(tex) }.result()
}

/// [`cuDriverGetVersion`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VERSION.html):
/// the CUDA version the installed driver supports, as `1000 * major + 10 * minor`.
pub(crate) fn driver_get_version() -> Result<i32, DriverError> {
    let mut out = 0;
    // SAFETY: `out` is writable; the call needs no context (and not even cuInit).
    unsafe { sys::cuDriverGetVersion(&mut out) }.result()?;
    Ok(out)
}

/// [`cuMemHostAlloc`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html#group__CUDA__MEM_1g572ca4011bfcb25034888a14d4e035b9)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. The returned memory is freed with [`mem_free_host`], once, after the work that uses
///    it.
pub(crate) unsafe fn mem_host_alloc(
    bytes: usize,
    flags: std::ffi::c_uint,
) -> Result<*mut std::ffi::c_void, DriverError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` is writable; the caller guarantees the context.
    unsafe { sys::cuMemHostAlloc(&mut out, bytes, flags) }.result()?;
    Ok(out)
}

/// [`cuMemHostGetDevicePointer`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html)
///
/// # Safety
/// 1. The context `host` was allocated in is current on the calling thread.
/// 2. `host` came from [`mem_host_alloc`] with `CU_MEMHOSTALLOC_DEVICEMAP` and is live.
pub(crate) unsafe fn mem_host_get_device_pointer(
    host: *mut std::ffi::c_void,
) -> Result<sys::CUdeviceptr, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable, flags must be 0; the caller guarantees the rest.
    unsafe { sys::cuMemHostGetDevicePointer_v2(out.as_mut_ptr(), host, 0) }.result()?;
    // SAFETY: the call succeeded, so it wrote the pointer.
    Ok(unsafe { out.assume_init() })
}

/// [`cuMemFreeHost`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html)
///
/// # Safety
/// 1. `host` came from [`mem_host_alloc`] and is freed once, after every stream operation
///    and host access that uses it.
pub(crate) unsafe fn mem_free_host(host: *mut std::ffi::c_void) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the precondition above.
    unsafe { sys::cuMemFreeHost(host) }.result()
}

/// [`cuStreamWaitValue32`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEMOP.html)
/// (the V2 entry point, available by default since driver 11.7).
///
/// # Safety
/// 1. The context of `stream` is current on the calling thread.
/// 2. `addr` is a 4-byte aligned device address (device memory, imported memory or
///    device-mapped host memory, never managed memory) that stays valid until the wait has
///    run.
/// 3. The condition will become true, or the stream (and whoever waits on it) hangs.
pub(crate) unsafe fn stream_wait_value_32(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u32,
    flags: std::ffi::c_uint,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuStreamWaitValue32_v2(stream, addr, value, flags) }.result()
}

/// [`cuStreamWriteValue32`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEMOP.html)
/// (the V2 entry point, available by default since driver 11.7).
///
/// # Safety
/// 1. The context of `stream` is current on the calling thread.
/// 2. `addr` is a 4-byte aligned device address (device memory, imported memory or
///    device-mapped host memory, never managed memory) that stays valid until the write has
///    run, and nothing else relies on its old contents.
pub(crate) unsafe fn stream_write_value_32(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u32,
    flags: std::ffi::c_uint,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuStreamWriteValue32_v2(stream, addr, value, flags) }.result()
}

/// [`cuMemGetAllocationGranularity`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g30ee906c2cf66a0347b3dfec3d7eb31a)
///
/// # Safety
/// 1. `prop` is a complete description (location, handle types) of a device allocation.
pub(crate) unsafe fn mem_get_allocation_granularity(
    prop: &sys::CUmemAllocationProp,
    option: sys::CUmemAllocationGranularity_flags,
) -> Result<usize, DriverError> {
    let mut out = 0;
    // SAFETY: `out` is writable; the caller guarantees the description.
    unsafe { sys::cuMemGetAllocationGranularity(&mut out, prop, option) }.result()?;
    Ok(out)
}

/// [`cuMemCreate`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g899d69a862bba36449789c64b430dc7c)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `size` is a non-zero multiple of the granularity of `prop`.
/// 3. The returned handle is released with [`mem_release`], once.
pub(crate) unsafe fn mem_create(
    size: usize,
    prop: &sys::CUmemAllocationProp,
) -> Result<sys::CUmemGenericAllocationHandle, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable, flags must be 0; the caller guarantees the rest.
    unsafe { sys::cuMemCreate(out.as_mut_ptr(), size, prop, 0) }.result()?;
    // SAFETY: the call succeeded, so it wrote the handle.
    Ok(unsafe { out.assume_init() })
}

/// [`cuMemRelease`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g3014f0759f43a8d82db951b8e4b91d68)
///
/// The physical memory is freed once every mapping of it is unmapped and every importer of
/// its shareable handle has let go of it.
///
/// # Safety
/// 1. `handle` came from [`mem_create`] and is released once.
pub(crate) unsafe fn mem_release(
    handle: sys::CUmemGenericAllocationHandle,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the precondition above.
    unsafe { sys::cuMemRelease(handle) }.result()
}

/// [`cuMemAddressReserve`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1ge489256c107df2a07ddf96d80c86cd9b)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `size` and `alignment` are multiples of the allocation granularity.
/// 3. The returned range is freed with [`mem_address_free`] with the same `size`, once,
///    after everything mapped into it is unmapped.
pub(crate) unsafe fn mem_address_reserve(
    size: usize,
    alignment: usize,
) -> Result<sys::CUdeviceptr, DriverError> {
    let mut out = MaybeUninit::uninit();
    // SAFETY: `out` is writable; no fixed address and no flags are asked for; the caller
    // guarantees the rest.
    unsafe { sys::cuMemAddressReserve(out.as_mut_ptr(), size, alignment, 0, 0) }.result()?;
    // SAFETY: the call succeeded, so it wrote the address.
    Ok(unsafe { out.assume_init() })
}

/// [`cuMemAddressFree`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g6993ecea2ea03e1b802b8255edc2da5b)
///
/// # Safety
/// 1. `ptr..ptr + size` is a whole range from [`mem_address_reserve`] with nothing mapped
///    in it, freed once.
pub(crate) unsafe fn mem_address_free(
    ptr: sys::CUdeviceptr,
    size: usize,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the precondition above.
    unsafe { sys::cuMemAddressFree(ptr, size) }.result()
}

/// [`cuMemMap`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1gff1d395423af5c5c75375516959dae56)
/// of the whole of `handle` (offset 0).
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `ptr..ptr + size` lies in a reserved range with nothing mapped in it, and `size` is
///    the size `handle` was created with.
/// 3. The range is unmapped with [`mem_unmap`] before the reservation is freed.
pub(crate) unsafe fn mem_map(
    ptr: sys::CUdeviceptr,
    size: usize,
    handle: sys::CUmemGenericAllocationHandle,
) -> Result<(), DriverError> {
    // SAFETY: offset and flags must be 0 here; the caller guarantees the rest.
    unsafe { sys::cuMemMap(ptr, size, 0, handle, 0) }.result()
}

/// [`cuMemUnmap`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1gfb50aac00c848fd7087e858f59bf7e2a)
///
/// # Safety
/// 1. `ptr..ptr + size` is exactly one range mapped with [`mem_map`], unmapped once, after
///    the work that uses it.
pub(crate) unsafe fn mem_unmap(ptr: sys::CUdeviceptr, size: usize) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the precondition above.
    unsafe { sys::cuMemUnmap(ptr, size) }.result()
}

/// [`cuMemSetAccess`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g1b6b12b10e8324bf462ecab4e7ef30e1)
///
/// # Safety
/// 1. A context is current on the calling thread.
/// 2. `ptr..ptr + size` is a mapped range (from [`mem_map`]).
pub(crate) unsafe fn mem_set_access(
    ptr: sys::CUdeviceptr,
    size: usize,
    desc: &[sys::CUmemAccessDesc],
) -> Result<(), DriverError> {
    // SAFETY: `desc` holds `desc.len()` descriptors; the caller guarantees the rest.
    unsafe { sys::cuMemSetAccess(ptr, size, desc.as_ptr(), desc.len()) }.result()
}

/// [`cuMemExportToShareableHandle`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html#group__CUDA__VA_1g633f273b155815f23c1d70e6d9b1f0a8)
/// as a POSIX fd.
///
/// # Safety
/// 1. `handle` came from [`mem_create`] with `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR` among
///    its requested handle types and is not yet released.
///
/// # Errors
/// On success the fd is new and belongs to the caller (it is wrapped at once); on failure
/// no fd was made.
#[cfg(unix)]
pub(crate) unsafe fn mem_export_to_fd(
    handle: sys::CUmemGenericAllocationHandle,
) -> Result<std::os::fd::OwnedFd, DriverError> {
    use std::os::fd::FromRawFd;
    let mut fd: std::ffi::c_int = -1;
    // SAFETY: a POSIX fd handle is written as an `int` to the pointer; `fd` is writable;
    // flags must be 0; the caller guarantees the handle.
    unsafe {
        sys::cuMemExportToShareableHandle(
            (&mut fd as *mut std::ffi::c_int).cast(),
            handle,
            sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
            0,
        )
    }
    .result()?;
    // SAFETY: the call succeeded, so `fd` is a new fd that nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// [`cuLaunchHostFunc`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__EXEC.html#group__CUDA__EXEC_1gab95a78143bae7f21eebb978f91e7f3f)
///
/// # Safety
/// 1. The context of `stream` is current on the calling thread.
/// 2. `f` may be called once, on a driver thread, with `user`, after the stream's earlier
///    work has completed; it makes no CUDA call and `user` stays valid until then.
///
/// # Errors
/// On an error `f` will not be called: `user` is still the caller's.
pub(crate) unsafe fn launch_host_func(
    stream: sys::CUstream,
    f: unsafe extern "C" fn(*mut std::ffi::c_void),
    user: *mut std::ffi::c_void,
) -> Result<(), DriverError> {
    // SAFETY: the caller guarantees the preconditions above.
    unsafe { sys::cuLaunchHostFunc(stream, Some(f), user) }.result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_memory_handle_type_maps_to_its_cuda_value() {
        use sys::CUexternalMemoryHandleType as Cu;
        let expected = [
            (MemoryHandleType::OpaqueFd, 1),
            (MemoryHandleType::OpaqueWin32, 2),
            (MemoryHandleType::OpaqueWin32Kmt, 3),
            (MemoryHandleType::D3D12Heap, 4),
            (MemoryHandleType::D3D12Resource, 5),
            (MemoryHandleType::D3D11Resource, 6),
            (MemoryHandleType::D3D11ResourceKmt, 7),
            (MemoryHandleType::NvSciBuf, 8),
            (MemoryHandleType::DmaBufFd, 9),
        ];
        assert_eq!(expected.len(), MemoryHandleType::ALL.len());
        for (t, value) in expected {
            assert_eq!(Cu::from(t) as u32, value, "{t}");
        }
        assert_eq!(
            Cu::from(MemoryHandleType::DmaBufFd),
            Cu::CU_EXTERNAL_MEMORY_HANDLE_TYPE_DMABUF_FD
        );
    }

    #[test]
    fn every_semaphore_handle_type_maps_to_its_cuda_value() {
        use sys::CUexternalSemaphoreHandleType as Cu;
        let expected = [
            (SemaphoreHandleType::OpaqueFd, 1),
            (SemaphoreHandleType::OpaqueWin32, 2),
            (SemaphoreHandleType::OpaqueWin32Kmt, 3),
            (SemaphoreHandleType::D3D12Fence, 4),
            (SemaphoreHandleType::D3D11Fence, 5),
            (SemaphoreHandleType::NvSciSync, 6),
            (SemaphoreHandleType::D3D11KeyedMutex, 7),
            (SemaphoreHandleType::D3D11KeyedMutexKmt, 8),
            (SemaphoreHandleType::TimelineFd, 9),
            (SemaphoreHandleType::TimelineWin32, 10),
        ];
        assert_eq!(expected.len(), SemaphoreHandleType::ALL.len());
        for (t, value) in expected {
            assert_eq!(Cu::from(t) as u32, value, "{t}");
        }
    }
}
