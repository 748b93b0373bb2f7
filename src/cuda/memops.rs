//! Stream memory operations (`cuStreamWaitValue32`, `cuStreamWriteValue32`) and the
//! device-mapped host words they write: the building blocks of
//! [`crate::interop::FrameSync`]'s low-latency mode.
//!
//! # What the driver documents
//! * `cuStreamWriteValue32` with default flags is preceded by a memory fence "with similar
//!   semantics to `__threadfence_system()`, but scoped to the stream": the writes of all
//!   earlier work on the stream are visible to the host and to other engines before the
//!   value is.
//! * `cuStreamWaitValue32` holds back later work on the stream until the condition holds.
//!   With `CU_STREAM_WAIT_VALUE_GEQ` the test is cyclic, `(int32_t)(*addr - value) >= 0`, so
//!   a 32-bit word compares correctly across its wrap as long as writer and waiter are fewer
//!   than 2^31 apart.
//! * Ordering made with these operations is invisible to CUDA's own scheduler: CUDA work on
//!   *another* stream that must follow still needs an event.
//! * The V2 entry points used here are available by default from driver 11.7 on
//!   ([`Context::check_stream_memops`]); older drivers need a kernel module parameter
//!   (`NVreg_EnableStreamMemOPs=1`) and the V1 entry points, which vkcuda does not call.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream, DriverError};

use super::context::bind;
use super::{raw, Context};
use crate::{Error, Result};

/// First driver version (`1000 * major + 10 * minor`) with the V2 stream memory operations
/// enabled by default.
const MEMOPS_V2_DRIVER: i32 = 11_070;

/// Checks a driver version for the V2 stream memory operations.
fn check_driver_version(version: i32) -> Result<()> {
    if version >= MEMOPS_V2_DRIVER {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: "CUDA stream memory operations (cuStreamWaitValue32/cuStreamWriteValue32 V2)".into(),
        reason: format!(
            "the driver supports CUDA {}.{}; the V2 operations need 11.7 or later",
            version / 1000,
            version % 1000 / 10
        ),
    })
}

/// Maps a stream memory operation's failure: `CUDA_ERROR_NOT_SUPPORTED` is
/// [`Error::Unsupported`].
fn memop_error(call: &'static str, e: DriverError) -> Error {
    match e.0 {
        sys::CUresult::CUDA_ERROR_NOT_SUPPORTED => Error::Unsupported {
            what: format!("{call} on this device and memory"),
            reason: "the driver returned CUDA_ERROR_NOT_SUPPORTED".into(),
        },
        _ => Error::cuda(call, e),
    }
}

impl Context {
    /// Checks that the driver runs the 32-bit stream memory operations
    /// (`cuStreamWaitValue32`, `cuStreamWriteValue32`) that
    /// [`crate::interop::SyncMode::LowLatency`] uses: driver 11.7 or later, where they are
    /// enabled on every platform.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the driver's version when it is older;
    /// [`Error::Cuda`] when `cuDriverGetVersion` fails.
    pub fn check_stream_memops(&self) -> Result<()> {
        let version =
            raw::driver_get_version().map_err(|e| Error::cuda("cuDriverGetVersion", e))?;
        check_driver_version(version)
    }
}

/// Enqueues on `stream` a wait until the 32-bit word at `addr` is at or (cyclically)
/// past `value`.
///
/// # Safety
/// 1. `addr` is a 4-byte aligned device address of `stream`'s context (device, imported or
///    device-mapped host memory) that stays valid until the wait has run.
/// 2. Someone will write a value that satisfies the wait; otherwise the stream hangs.
///
/// # Errors
/// [`Error::Unsupported`] for `CUDA_ERROR_NOT_SUPPORTED`, [`Error::Cuda`] otherwise.
pub(crate) unsafe fn wait_geq(
    stream: &CudaStream,
    addr: sys::CUdeviceptr,
    value: u32,
) -> Result<()> {
    bind(stream.context())?;
    let geq = sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as std::ffi::c_uint;
    // SAFETY: the context is current (bound above); the caller guarantees the address and
    // that the wait is satisfied.
    unsafe { raw::stream_wait_value_32(stream.cu_stream(), addr, value, geq) }
        .map_err(|e| memop_error("cuStreamWaitValue32", e))
}

/// Enqueues on `stream` a write of `value` to the 32-bit word at `addr`, after a
/// stream-scoped system memory fence (earlier work's writes are visible first).
///
/// # Safety
/// 1. `addr` is a 4-byte aligned device address of `stream`'s context (device, imported or
///    device-mapped host memory) that stays valid until the write has run.
///
/// # Errors
/// [`Error::Unsupported`] for `CUDA_ERROR_NOT_SUPPORTED`, [`Error::Cuda`] otherwise.
pub(crate) unsafe fn write(stream: &CudaStream, addr: sys::CUdeviceptr, value: u32) -> Result<()> {
    bind(stream.context())?;
    let fenced = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as std::ffi::c_uint;
    // SAFETY: the context is current (bound above); the caller guarantees the address.
    unsafe { raw::stream_write_value_32(stream.cu_stream(), addr, value, fenced) }
        .map_err(|e| memop_error("cuStreamWriteValue32", e))
}

/// Enqueues on `stream` a call of `wake(user)` on a driver thread once the stream's earlier
/// work (e.g. a [`write`]) has completed: a host thread can then sleep instead of polling.
///
/// # Safety
/// 1. `wake` makes no CUDA call and returns quickly (the stream waits for it).
/// 2. `user` stays valid until `wake` has run; on an error `wake` will not run and `user`
///    is still the caller's.
///
/// # Errors
/// [`Error::Cuda`] when the call fails.
pub(crate) unsafe fn notify(
    stream: &CudaStream,
    wake: unsafe extern "C" fn(*mut std::ffi::c_void),
    user: *mut std::ffi::c_void,
) -> Result<()> {
    bind(stream.context())?;
    // SAFETY: the context is current (bound above); the caller guarantees `wake` and `user`.
    unsafe { raw::launch_host_func(stream.cu_stream(), wake, user) }
        .map_err(|e| Error::cuda("cuLaunchHostFunc", e))
}

/// Page-locked host memory holding `len` 32-bit words, mapped into the device's address
/// space (`cuMemHostAlloc` with `DEVICEMAP | PORTABLE`): CUDA streams write them with
/// [`write`], the host reads them with [`HostWords::read`] without any driver call.
/// Zeroed at creation; freed with `cuMemFreeHost` on drop, which must come after every
/// stream operation that writes it has run.
pub(crate) struct HostWords {
    host: *mut u32,
    device: sys::CUdeviceptr,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the words are plain host memory, read with volatile loads and written only by the
// device; the pointer is valid in every thread and the free in `Drop` binds the context.
unsafe impl Send for HostWords {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for HostWords {}

impl Drop for HostWords {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: allocated by `new` and freed only here; the owner guarantees no stream
        // operation still writes it (see the type's docs).
        self.ctx
            .record_err(unsafe { raw::mem_free_host(self.host.cast()) });
    }
}

impl HostWords {
    /// Allocates `len` zeroed words.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`len`) for 0 or a size the host cannot address;
    /// [`Error::OutOfMemory`] or [`Error::Cuda`] from the driver.
    pub(crate) fn new(ctx: &Context, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(4)
            .filter(|&b| b > 0)
            .ok_or_else(|| Error::invalid("len", format!("{len} words"), "1 to usize::MAX / 4"))?;
        let cuda = ctx.cuda();
        bind(cuda)?;
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        // SAFETY: the context is current; the memory is freed by `Drop` below, once.
        let host = unsafe { raw::mem_host_alloc(bytes, flags) }
            .map_err(|e| Error::cuda_sized("cuMemHostAlloc", e, bytes as u64))?;
        let mut words = Self {
            host: host.cast(),
            device: 0,
            len,
            ctx: cuda.clone(),
        };
        // SAFETY: a fresh, page-aligned allocation of `len` words that nothing else uses yet.
        unsafe { std::ptr::write_bytes(words.host, 0, len) };
        // SAFETY: the context is current and `host` is a live DEVICEMAP allocation.
        words.device = unsafe { raw::mem_host_get_device_pointer(host) }
            .map_err(|e| Error::cuda("cuMemHostGetDevicePointer", e))?;
        Ok(words)
    }

    /// Checks a word index.
    fn check(&self, index: usize) -> Result<()> {
        if index < self.len {
            return Ok(());
        }
        Err(Error::invalid(
            "index",
            format!("word {index}"),
            format!("an index below {}", self.len),
        ))
    }

    /// Reads word `index` as the device last wrote it; an acquire fence follows, so host
    /// reads after it see what the writer made visible before the word.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`index`) when it is out of range.
    pub(crate) fn read(&self, index: usize) -> Result<u32> {
        self.check(index)?;
        let word = self.host.wrapping_add(index);
        // SAFETY: `index < len`, so the word lies inside the live, aligned allocation; a
        // volatile load because the device writes it behind the compiler's back.
        let value = unsafe { std::ptr::read_volatile(word) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        Ok(value)
    }

    /// The device address of word `index`, for [`write`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`index`) when it is out of range.
    pub(crate) fn device_ptr(&self, index: usize) -> Result<sys::CUdeviceptr> {
        self.check(index)?;
        Ok(self.device + 4 * index as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_memops_need_driver_11_7() {
        assert!(check_driver_version(11_070).is_ok());
        assert!(check_driver_version(13_000).is_ok());
        match check_driver_version(11_060) {
            Err(Error::Unsupported { reason, .. }) => {
                assert!(reason.contains("CUDA 11.6"), "{reason}");
                assert!(reason.contains("11.7"), "{reason}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn not_supported_is_its_own_variant() {
        let e = memop_error(
            "cuStreamWaitValue32",
            DriverError(sys::CUresult::CUDA_ERROR_NOT_SUPPORTED),
        );
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = memop_error(
            "cuStreamWaitValue32",
            DriverError(sys::CUresult::CUDA_ERROR_INVALID_VALUE),
        );
        assert!(matches!(e, Error::Cuda { .. }), "{e}");
    }
}
