//! External memory imported into CUDA, and read-write buffers mapped from it. (Mipmapped
//! arrays mapped from it live in `array.rs`.)
//!
//! Every mapping holds a clone of the [`ExternalMemory`] it maps, and the import holds the
//! exporter's keep-alive, so `cuMemFree`/`cuMipmappedArrayDestroy` ->
//! `cuDestroyExternalMemory` -> exporter free happen in that order by construction.

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, DriverError,
    LaunchArgs, PushKernelArg, SyncOnDrop,
};

use super::context::bind;
use super::vmm::VmmAllocation;
use super::{raw, Context};
use crate::error::HandleType;
#[cfg(unix)]
use crate::external::lend_fd;
use crate::external::{MemoryHandle, MemoryHandleType, MemoryImport, Win32Handle};
use crate::{Error, Result};

/// Required alignment of [`ExternalMemory::map`] offsets, in bytes.
///
/// It is CUDA's own allocation alignment (what `cuMemAlloc` guarantees), which kernels and
/// vectorised loads assume of a buffer's base pointer.
pub const MAP_OFFSET_ALIGNMENT: u64 = 256;

/// Maps a failed `cuImport*` to the error the module docs of [`crate::error`] promise:
/// a rejected handle is [`Error::InvalidExternalHandle`] (`CUDA_ERROR_INVALID_HANDLE`,
/// `_INVALID_VALUE`, `_OPERATING_SYSTEM`, and `_UNKNOWN`, which the NVIDIA driver returns
/// for an fd that is not a memory or semaphore object), an unsupported type
/// [`Error::Unsupported`].
pub(super) fn import_error(
    call: &'static str,
    handle_type: impl Into<HandleType> + fmt::Display + Copy,
    err: DriverError,
) -> Error {
    use sys::CUresult as R;
    match err.0 {
        R::CUDA_ERROR_INVALID_HANDLE
        | R::CUDA_ERROR_INVALID_VALUE
        | R::CUDA_ERROR_OPERATING_SYSTEM
        | R::CUDA_ERROR_UNKNOWN => Error::InvalidExternalHandle {
            call,
            handle_type: handle_type.into(),
            detail: format!("{:?}", err.0),
        },
        R::CUDA_ERROR_NOT_SUPPORTED => Error::Unsupported {
            what: format!("{call} of a {handle_type} handle"),
            reason: format!("{:?}", err.0),
        },
        _ => Error::cuda(call, err),
    }
}

/// Checks an import description before any driver call.
fn validate_import(size: u64, dedicated: bool, handle_type: MemoryHandleType) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid(
            "import.size",
            "the import is 0 bytes",
            "the allocation size in bytes (VkMemoryRequirements::size), at least 1",
        ));
    }
    if handle_type.always_dedicated() && !dedicated {
        return Err(Error::invalid(
            "import.dedicated",
            format!("false, but {handle_type} memory is always a dedicated allocation"),
            "true",
        ));
    }
    if handle_type == MemoryHandleType::DmaBufFd && dedicated {
        return Err(Error::invalid(
            "import.dedicated",
            "true, but CUDA requires no flags for DmaBufFd imports",
            "false",
        ));
    }
    Ok(())
}

/// Checks a [`ExternalMemory::map`] range against the import's size; returns its length.
pub(super) fn validate_map_range(range: &Range<u64>, size: u64) -> Result<usize> {
    if range.start >= range.end {
        return Err(Error::invalid(
            "range",
            format!("{}..{} is empty", range.start, range.end),
            "start < end",
        ));
    }
    if range.end > size {
        return Err(Error::invalid(
            "range.end",
            format!("{} is past the end of the {size}-byte import", range.end),
            format!("end <= {size}"),
        ));
    }
    if !range.start.is_multiple_of(MAP_OFFSET_ALIGNMENT) {
        return Err(Error::invalid(
            "range.start",
            format!(
                "{} is not a multiple of {MAP_OFFSET_ALIGNMENT}",
                range.start
            ),
            format!("a multiple of MAP_OFFSET_ALIGNMENT ({MAP_OFFSET_ALIGNMENT} bytes)"),
        ));
    }
    let len = range.end - range.start;
    usize::try_from(len).map_err(|_| {
        Error::invalid(
            "range",
            format!("{len} bytes do not fit this platform's usize"),
            format!("at most {} bytes", usize::MAX),
        )
    })
}

/// The driver's form of a memory handle (the `handle` union of the import descriptor).
type RawMemoryHandle = sys::CUDA_EXTERNAL_MEMORY_HANDLE_DESC_st__bindgen_ty_1;

/// Calls `import` with the driver's form of `handle`.
///
/// An fd is lent with [`lend_fd`]: after a successful import the driver owns a duplicate
/// and the caller's fd is closed; after a failure nothing stays open and nothing is closed
/// twice (the NVIDIA driver closes an fd it refuses, although the documentation leaves it
/// to the caller). Win32 and NvSci handles are only borrowed for the call.
fn with_raw_memory_handle<T>(
    handle: MemoryHandle,
    import: impl FnOnce(RawMemoryHandle) -> Result<T>,
) -> Result<T> {
    use sys::CUDA_EXTERNAL_MEMORY_HANDLE_DESC_st__bindgen_ty_1__bindgen_ty_1 as Win32;
    let win32 = |h: Win32Handle| RawMemoryHandle {
        win32: Win32 {
            handle: h.0,
            name: std::ptr::null(),
        },
    };
    match handle {
        #[cfg(unix)]
        MemoryHandle::OpaqueFd(fd) | MemoryHandle::DmaBufFd(fd) => {
            lend_fd(fd, |fd| import(RawMemoryHandle { fd }))
        }
        MemoryHandle::OpaqueWin32(h)
        | MemoryHandle::OpaqueWin32Kmt(h)
        | MemoryHandle::D3D12Heap(h)
        | MemoryHandle::D3D12Resource(h)
        | MemoryHandle::D3D11Resource(h)
        | MemoryHandle::D3D11ResourceKmt(h) => import(win32(h)),
        MemoryHandle::NvSciBuf(obj) => import(RawMemoryHandle {
            nvSciBufObject: obj.0.cast_const(),
        }),
    }
}

/// The import descriptor, built field by field (the struct has enum fields, so it must
/// never be zero-initialised).
fn memory_handle_desc(
    handle_type: MemoryHandleType,
    handle: RawMemoryHandle,
    size: u64,
    dedicated: bool,
) -> sys::CUDA_EXTERNAL_MEMORY_HANDLE_DESC {
    sys::CUDA_EXTERNAL_MEMORY_HANDLE_DESC {
        type_: handle_type.into(),
        handle,
        size,
        flags: if dedicated {
            sys::CUDA_EXTERNAL_MEMORY_DEDICATED
        } else {
            0
        },
        reserved: [0; 16],
    }
}

/// A block of external memory imported into CUDA (`cuImportExternalMemory`).
///
/// Cloning is cheap and shares the import. The import is destroyed when the last clone and
/// the last mapping made from it are gone; only then is the exporter's keep-alive (see
/// [`ExternalMemory::import_with_owner`]) dropped.
///
/// Dropping does not wait for GPU work: finish the work that uses a mapping (stream sync
/// or a semaphore) before its last handle goes.
#[derive(Clone)]
pub struct ExternalMemory {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    raw: sys::CUexternalMemory,
    size: u64,
    dedicated: bool,
    handle_type: MemoryHandleType,
    ctx: Arc<CudaContext>,
    /// The mapping of the whole import while a [`MappedBuffer`] holds it (weak: the
    /// mapping holds the import, not the other way round).
    whole: Mutex<Weak<WholeMapping>>,
    /// Keeps the exporter's resource alive; declared last so it drops after the
    /// `cuDestroyExternalMemory` in `Drop`.
    owner: Option<Arc<dyn Any + Send + Sync>>,
}

// SAFETY: `CUexternalMemory` is an opaque driver handle that may be used from any thread
// once its context is bound, which every use here does first.
unsafe impl Send for MemoryInner {}
// SAFETY: as above; shared access only reads the handle, the driver synchronises.
unsafe impl Sync for MemoryInner {}

impl Drop for MemoryInner {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: every mapping (whole-import buffer or mipmapped array) holds a clone of
        // the `ExternalMemory`, so none is left once the last `Arc` drops; the import is
        // destroyed only here, once.
        self.ctx
            .record_err(unsafe { raw::destroy_external_memory(self.raw) });
    }
}

impl fmt::Debug for ExternalMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalMemory")
            .field("handle_type", &self.inner.handle_type)
            .field("size", &self.inner.size)
            .field("dedicated", &self.inner.dedicated)
            .field("device", &self.inner.ctx.ordinal())
            .field("has_owner", &self.inner.owner.is_some())
            .finish()
    }
}

impl ExternalMemory {
    /// Imports external memory into `ctx`.
    ///
    /// An fd handle moves into CUDA when the import succeeds and is closed by vkcuda when
    /// it fails; Win32 and NvSci handles are only borrowed for the call. Only opaque fds
    /// are tested (Linux); the other handle types are passed as the CUDA documentation
    /// describes and are untested.
    ///
    /// # Safety
    /// 1. `import.handle` refers to one allocation of exactly `import.size` bytes (the
    ///    allocation size, not the resource size) on `ctx`'s device.
    /// 2. `import.dedicated` is true exactly when that allocation is dedicated to one
    ///    buffer or image.
    /// 3. A Win32 or NvSci handle is valid for the duration of the call.
    /// 4. The allocation stays alive while the import exists: either the handle keeps it
    ///    alive (fds, NT handles), or the caller keeps the exporter's resource alive (see
    ///    [`ExternalMemory::import_with_owner`]).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] for a zero size or a dedicated flag the handle type
    ///   forbids; checked before any driver call.
    /// * [`Error::InvalidExternalHandle`] when the driver rejects the handle
    ///   (`CUDA_ERROR_INVALID_HANDLE`, `_INVALID_VALUE`, `_OPERATING_SYSTEM`, `_UNKNOWN`).
    /// * [`Error::Unsupported`] for `CUDA_ERROR_NOT_SUPPORTED`, [`Error::Cuda`] otherwise.
    ///
    /// After any error the fd has been closed; nothing leaks.
    pub unsafe fn import(ctx: &Context, import: MemoryImport) -> Result<Self> {
        // SAFETY: forwarded from this function's contract.
        unsafe { Self::import_inner(ctx, import, None) }
    }

    /// Like [`ExternalMemory::import`], and keeps `owner` (e.g. the exporter's buffer and
    /// memory) alive until after `cuDestroyExternalMemory`, so the exporter cannot free the
    /// memory while CUDA still maps it.
    ///
    /// # Safety
    /// As [`ExternalMemory::import`]; keeping `owner` alive must keep the allocation alive.
    ///
    /// # Errors
    /// As [`ExternalMemory::import`]; on error `owner` is dropped.
    pub unsafe fn import_with_owner(
        ctx: &Context,
        import: MemoryImport,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Result<Self> {
        // SAFETY: forwarded from this function's contract.
        unsafe { Self::import_inner(ctx, import, Some(owner)) }
    }

    /// # Safety
    /// As [`ExternalMemory::import`].
    unsafe fn import_inner(
        ctx: &Context,
        import: MemoryImport,
        owner: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Result<Self> {
        let MemoryImport {
            handle,
            size,
            dedicated,
            memory_type: _,
        } = import;
        let handle_type = handle.handle_type();
        validate_import(size, dedicated, handle_type)?;
        let cuda = ctx.cuda();
        bind(cuda)?;
        let raw = with_raw_memory_handle(handle, |raw_handle| {
            let desc = memory_handle_desc(handle_type, raw_handle, size, dedicated);
            // SAFETY: the context is current (bound above); `desc` names the live handle
            // lent for this call; the caller guarantees size, dedication and validity.
            unsafe { raw::import_external_memory(&desc) }
                .map_err(|e| import_error("cuImportExternalMemory", handle_type, e))
        })?;
        Ok(Self {
            inner: Arc::new(MemoryInner {
                raw,
                size,
                dedicated,
                handle_type,
                ctx: cuda.clone(),
                whole: Mutex::default(),
                owner,
            }),
        })
    }

    /// Size of the imported allocation in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The handle type it was imported from.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.inner.handle_type
    }

    /// Whether it was imported as a dedicated allocation.
    pub fn is_dedicated(&self) -> bool {
        self.inner.dedicated
    }

    /// The CUDA context it was imported in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The raw handle, for driver calls vkcuda does not wrap. Do not destroy it.
    pub fn cu_external_memory(&self) -> sys::CUexternalMemory {
        self.inner.raw
    }

    /// Maps `range` (bytes of the import) as a read-write device buffer.
    ///
    /// All [`MappedBuffer`]s of one import share one driver mapping of the whole import
    /// (`cuExternalMemoryGetMappedBuffer` at offset 0, made by the first `map`, freed with
    /// `cuMemFree` when the last of them is dropped) and point into it. So any number of
    /// ranges, overlapping or not, cost one driver mapping, and overlapping ranges alias
    /// the same addresses. (NVIDIA driver 580 on an H100 refuses every non-zero offset
    /// into Vulkan-exported memory with `CUDA_ERROR_INVALID_VALUE`, and CUDA's
    /// documentation recommends mapping the combined range and offsetting into it.)
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] for an empty range (`range`), an end past the import
    ///   (`range.end`) or a start that is not a multiple of [`MAP_OFFSET_ALIGNMENT`]
    ///   (`range.start`).
    /// * [`Error::OutOfMemory`] or [`Error::Cuda`] when the driver mapping or the two
    ///   use-tracking events fail.
    pub fn map(&self, range: Range<u64>) -> Result<MappedBuffer> {
        let len = validate_map_range(&range, self.size())?;
        let whole = self.whole_mapping()?;
        MappedBuffer::new(
            whole.ptr + range.start,
            range.start,
            len,
            self.context(),
            Source::Import(whole),
        )
    }

    /// [`ExternalMemory::map`] whose mapping also holds `holder`, the owner of that range
    /// of the import (a pool buffer, which keeps its slot), until it is dropped.
    ///
    /// # Errors
    /// As [`ExternalMemory::map`].
    pub(crate) fn map_holding(
        &self,
        range: Range<u64>,
        holder: Arc<dyn Any + Send + Sync>,
    ) -> Result<MappedBuffer> {
        let mut mapped = self.map(range)?;
        mapped.holder = Some(holder);
        Ok(mapped)
    }

    /// A handle that does not keep the import alive (for caches of imports).
    pub(crate) fn downgrade(&self) -> WeakExternalMemory {
        WeakExternalMemory(Arc::downgrade(&self.inner))
    }

    /// The mapping of the whole import, made if no [`MappedBuffer`] holds it.
    fn whole_mapping(&self) -> Result<Arc<WholeMapping>> {
        let mut slot = self
            .inner
            .whole
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(whole) = slot.upgrade() {
            return Ok(whole);
        }
        let ctx = self.context();
        bind(ctx)?;
        let size = self.size();
        // SAFETY: the context is current, the import is alive (held by `self`), `0..size`
        // is the whole of it, and the pointer is freed by `WholeMapping::drop` while the
        // `WholeMapping` still holds the import.
        let ptr = unsafe { raw::external_memory_get_mapped_buffer(self.inner.raw, 0, size) }
            .map_err(|e| Error::cuda_sized("cuExternalMemoryGetMappedBuffer", e, size))?;
        let whole = Arc::new(WholeMapping {
            ptr,
            memory: self.clone(),
        });
        *slot = Arc::downgrade(&whole);
        Ok(whole)
    }
}

/// An [`ExternalMemory`] that does not keep the import alive.
pub(crate) struct WeakExternalMemory(Weak<MemoryInner>);

impl WeakExternalMemory {
    /// The import, if something still holds it.
    pub(crate) fn upgrade(&self) -> Option<ExternalMemory> {
        self.0.upgrade().map(|inner| ExternalMemory { inner })
    }
}

/// A read-write mapping of a whole import (`cuExternalMemoryGetMappedBuffer`), shared by
/// the [`MappedBuffer`]s of that import and freed with `cuMemFree` after the last of them.
struct WholeMapping {
    ptr: sys::CUdeviceptr,
    /// Declared last: the import outlives the `cuMemFree` in `Drop`.
    memory: ExternalMemory,
}

impl Drop for WholeMapping {
    fn drop(&mut self) {
        let ctx = self.memory.context();
        ctx.record_err(ctx.bind_to_thread());
        // SAFETY: `ptr` came from `cuExternalMemoryGetMappedBuffer` on the import still held
        // by `self.memory`; no `MappedBuffer` points into it any more; freed only here, once.
        ctx.record_err(unsafe { raw::mem_free(self.ptr) });
    }
}

/// A read-write device pointer to a range of an [`ExternalMemory`]
/// ([`ExternalMemory::map`]) or of a [`VmmAllocation`] ([`VmmAllocation::map`]). It keeps
/// what it points into (the import's mapping, and so the import, or the allocation) alive.
///
/// Works with cudarc's copies and memsets (`DevicePtr<u8>`, `DevicePtrMut<u8>`) and as a
/// kernel pointer argument (`launch_builder(..).arg(&buf)`).
///
/// # Tracking and drop
/// cudarc's safe operations are tracked as for its own slices: each read records a `read`
/// event after the operation and each write a `write` event (when the context manages
/// multi-stream synchronisation, the default once a stream exists; otherwise the operation
/// synchronises its stream instead), and a new operation first makes its stream wait for
/// the earlier writes (and, for a write, reads). Dropping waits on the host for both events,
/// so the range is not unmapped, and the import or allocation not freed, under a pending
/// cudarc operation. Kernel launches (`unsafe` in cudarc) are not tracked: the launch's safety
/// contract covers them, so synchronise their stream before dropping. Ordering against the
/// exporter (Vulkan) is the job of the caller's semaphores.
pub struct MappedBuffer {
    ptr: sys::CUdeviceptr,
    offset: u64,
    len: usize,
    stream: Arc<CudaStream>,
    /// Recorded after each tracked read.
    read: CudaEvent,
    /// Recorded after each tracked write.
    write: CudaEvent,
    /// What owns the mapped range within the import, held as long as the mapping (a pool
    /// buffer, whose slot would otherwise go to the next allocation while CUDA still maps
    /// it); dropped after the event waits in `Drop`.
    holder: Option<Arc<dyn Any + Send + Sync>>,
    /// Declared last: the memory outlives the event waits in `Drop`.
    source: Source,
}

/// What a [`MappedBuffer`] points into, and keeps alive.
enum Source {
    /// The shared mapping of an import ([`ExternalMemory::map`]).
    Import(Arc<WholeMapping>),
    /// Memory CUDA allocated itself ([`VmmAllocation::map`]).
    Vmm(VmmAllocation),
}

impl Drop for MappedBuffer {
    fn drop(&mut self) {
        // Unrecorded events are complete, so this waits only for tracked uses.
        let ctx = self.stream.context();
        ctx.record_err(self.read.synchronize());
        ctx.record_err(self.write.synchronize());
    }
}

impl MappedBuffer {
    /// A mapping of `len` bytes at `ptr` (`offset` into `source`), with its two tracking
    /// events made in `ctx`.
    fn new(
        ptr: sys::CUdeviceptr,
        offset: u64,
        len: usize,
        ctx: &Arc<CudaContext>,
        source: Source,
    ) -> Result<Self> {
        let event = || {
            ctx.new_event(None)
                .map_err(|e| Error::cuda("cuEventCreate", e))
        };
        Ok(Self {
            ptr,
            offset,
            len,
            stream: ctx.default_stream(),
            read: event()?,
            write: event()?,
            holder: None,
            source,
        })
    }

    /// What a cudarc operation on `stream` gets: waits for `after` (earlier uses it must
    /// follow), then records `event` after itself; or synchronises `stream` when the
    /// context does not record events (cudarc's `SyncOnDrop::Record` is then a no-op).
    fn tracked<'a>(
        &'a self,
        stream: &'a CudaStream,
        after: &[&CudaEvent],
        event: &'a CudaEvent,
    ) -> SyncOnDrop<'a> {
        let ctx = stream.context();
        if !ctx.is_managing_stream_synchronization() {
            return SyncOnDrop::Sync(Some(stream));
        }
        for e in after {
            ctx.record_err(stream.wait(e));
        }
        SyncOnDrop::Record(Some((event, stream)))
    }
}

impl fmt::Debug for MappedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedBuffer")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("source", &self.source_debug())
            .finish()
    }
}

impl MappedBuffer {
    /// The device address of the first mapped byte.
    pub fn cu_device_ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// Mapped length in bytes (never 0).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: [`ExternalMemory::map`] rejects empty ranges.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the mapping in the import, in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The import this maps, or `None` for memory CUDA allocated itself
    /// ([`MappedBuffer::vmm`]).
    pub fn memory(&self) -> Option<&ExternalMemory> {
        match &self.source {
            Source::Import(whole) => Some(&whole.memory),
            Source::Vmm(_) => None,
        }
    }

    /// The CUDA allocation this maps, or `None` for an import ([`MappedBuffer::memory`]).
    pub fn vmm(&self) -> Option<&VmmAllocation> {
        match &self.source {
            Source::Import(_) => None,
            Source::Vmm(alloc) => Some(alloc),
        }
    }

    /// `range` of `alloc` (see [`VmmAllocation::map`]).
    pub(super) fn in_vmm(alloc: VmmAllocation, range: Range<u64>) -> Result<Self> {
        let len = validate_map_range(&range, alloc.size())?;
        let ctx = Arc::clone(alloc.context());
        Self::new(
            alloc.cu_device_ptr() + range.start,
            range.start,
            len,
            &ctx,
            Source::Vmm(alloc),
        )
    }

    fn source_debug(&self) -> &dyn fmt::Debug {
        match &self.source {
            Source::Import(whole) => &whole.memory,
            Source::Vmm(alloc) => alloc,
        }
    }
}

impl DeviceSlice<u8> for MappedBuffer {
    fn len(&self) -> usize {
        self.len
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl DevicePtr<u8> for MappedBuffer {
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.tracked(stream, &[&self.write], &self.read))
    }
}

impl DevicePtrMut<u8> for MappedBuffer {
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        let this = &*self;
        (
            this.ptr,
            this.tracked(stream, &[&this.read, &this.write], &this.write),
        )
    }
}

// SAFETY: pushes the address of the `CUdeviceptr` field, borrowed for `'b`, which outlives
// the launch builder `'a`; the kernel receives a plain device pointer, as with cudarc's own
// `&CudaSlice` argument.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b MappedBuffer> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b MappedBuffer) -> &mut Self {
        <Self as PushKernelArg<&'b sys::CUdeviceptr>>::arg(self, &arg.ptr)
    }
}

// SAFETY: as for `&MappedBuffer`; the exclusive borrow only documents the intent to write.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b mut MappedBuffer> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b mut MappedBuffer) -> &mut Self {
        <Self as PushKernelArg<&'b sys::CUdeviceptr>>::arg(self, &arg.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    #[test]
    fn map_range_accepts_aligned_ranges_inside_the_import() {
        assert_eq!(validate_map_range(&(0..4096), 4096).unwrap(), 4096);
        assert_eq!(validate_map_range(&(256..257), 4096).unwrap(), 1);
    }

    #[test]
    fn map_range_rejects_empty_ranges() {
        let (arg, problem, _) = invalid_arg(validate_map_range(&(512..512), 4096));
        assert_eq!(arg, "range");
        assert!(problem.contains("512..512"), "{problem}");
        let (arg, _, _) = invalid_arg(validate_map_range(
            &Range {
                start: 1024,
                end: 0,
            },
            4096,
        ));
        assert_eq!(arg, "range");
    }

    #[test]
    fn map_range_rejects_an_end_past_the_import() {
        let (arg, problem, expected) = invalid_arg(validate_map_range(&(0..4097), 4096));
        assert_eq!(arg, "range.end");
        assert!(problem.contains("4097"), "{problem}");
        assert!(problem.contains("4096-byte import"), "{problem}");
        assert_eq!(expected, "end <= 4096");
    }

    #[test]
    fn map_range_rejects_unaligned_starts() {
        let (arg, problem, expected) = invalid_arg(validate_map_range(&(100..200), 4096));
        assert_eq!(arg, "range.start");
        assert!(problem.contains("100"), "{problem}");
        assert!(expected.contains("256"), "{expected}");
    }

    #[test]
    fn import_rejects_zero_size_and_wrong_dedication() {
        let (arg, _, _) = invalid_arg(validate_import(0, true, MemoryHandleType::OpaqueFd));
        assert_eq!(arg, "import.size");
        let (arg, problem, _) =
            invalid_arg(validate_import(64, false, MemoryHandleType::D3D12Resource));
        assert_eq!(arg, "import.dedicated");
        assert!(problem.contains("D3D12Resource"), "{problem}");
        let (arg, _, _) = invalid_arg(validate_import(64, true, MemoryHandleType::DmaBufFd));
        assert_eq!(arg, "import.dedicated");
        assert!(validate_import(64, false, MemoryHandleType::OpaqueFd).is_ok());
        assert!(validate_import(64, true, MemoryHandleType::OpaqueFd).is_ok());
    }

    #[test]
    fn import_descriptor_carries_handle_size_and_dedication() {
        let desc = memory_handle_desc(
            MemoryHandleType::OpaqueFd,
            RawMemoryHandle { fd: 42 },
            1 << 20,
            true,
        );
        assert_eq!(
            desc.type_,
            sys::CUexternalMemoryHandleType::CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD
        );
        // SAFETY: the descriptor was built with the `fd` member.
        assert_eq!(unsafe { desc.handle.fd }, 42);
        assert_eq!(desc.size, 1 << 20);
        assert_eq!(desc.flags, sys::CUDA_EXTERNAL_MEMORY_DEDICATED);
        let shared = memory_handle_desc(
            MemoryHandleType::D3D12Heap,
            RawMemoryHandle { fd: 0 },
            64,
            false,
        );
        assert_eq!(shared.flags, 0);
    }

    #[test]
    fn rejected_handles_get_their_own_variant() {
        use sys::CUresult as R;
        for code in [
            R::CUDA_ERROR_INVALID_HANDLE,
            R::CUDA_ERROR_INVALID_VALUE,
            R::CUDA_ERROR_OPERATING_SYSTEM,
            R::CUDA_ERROR_UNKNOWN,
        ] {
            let e = import_error(
                "cuImportExternalMemory",
                MemoryHandleType::OpaqueFd,
                DriverError(code),
            );
            assert!(matches!(e, Error::InvalidExternalHandle { .. }), "{e:?}");
        }
        let e = import_error(
            "cuImportExternalMemory",
            MemoryHandleType::OpaqueFd,
            DriverError(R::CUDA_ERROR_OUT_OF_MEMORY),
        );
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    }
}
