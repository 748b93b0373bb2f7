//! External semaphores imported into CUDA, signalled and waited on from streams.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream, DriverError};

use super::context::bind;
use super::memory::import_error;
use super::{raw, Context};
#[cfg(unix)]
use crate::external::lend_fd;
use crate::external::{SemaphoreHandle, SemaphoreHandleType, Win32Handle};
use crate::timeline::HighWater;
use crate::{Error, Result};

/// The driver's form of a semaphore handle (the `handle` union of the import descriptor).
type RawSemaphoreHandle = sys::CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC_st__bindgen_ty_1;

/// Calls `import` with the driver's form of `handle`; fds are lent as for memory (see
/// [`lend_fd`]), Win32 and NvSci handles only borrowed for the call.
fn with_raw_semaphore_handle<T>(
    handle: SemaphoreHandle,
    import: impl FnOnce(RawSemaphoreHandle) -> Result<T>,
) -> Result<T> {
    use sys::CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC_st__bindgen_ty_1__bindgen_ty_1 as Win32;
    let win32 = |h: Win32Handle| RawSemaphoreHandle {
        win32: Win32 {
            handle: h.0,
            name: std::ptr::null(),
        },
    };
    match handle {
        #[cfg(unix)]
        SemaphoreHandle::OpaqueFd(fd) | SemaphoreHandle::TimelineFd(fd) => {
            lend_fd(fd, |fd| import(RawSemaphoreHandle { fd }))
        }
        SemaphoreHandle::OpaqueWin32(h)
        | SemaphoreHandle::OpaqueWin32Kmt(h)
        | SemaphoreHandle::D3D12Fence(h)
        | SemaphoreHandle::D3D11Fence(h)
        | SemaphoreHandle::D3D11KeyedMutex(h)
        | SemaphoreHandle::D3D11KeyedMutexKmt(h)
        | SemaphoreHandle::TimelineWin32(h) => import(win32(h)),
        SemaphoreHandle::NvSciSync(obj) => import(RawSemaphoreHandle {
            nvSciSyncObj: obj.0.cast_const(),
        }),
    }
}

/// The import descriptor, built field by field (the struct has an enum field, so it must
/// never be zero-initialised).
fn semaphore_handle_desc(
    handle_type: SemaphoreHandleType,
    handle: RawSemaphoreHandle,
) -> sys::CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC {
    sys::CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC {
        type_: handle_type.into(),
        handle,
        flags: 0,
        reserved: [0; 16],
    }
}

/// Checks that a signal or wait of `value` makes sense for `handle_type`.
fn check_value(handle_type: SemaphoreHandleType, value: u64) -> Result<()> {
    match handle_type {
        SemaphoreHandleType::D3D11KeyedMutex | SemaphoreHandleType::D3D11KeyedMutexKmt => {
            Err(Error::Unsupported {
                what: format!("signal/wait on a {handle_type} semaphore"),
                reason: "a keyed mutex takes a key per release and a key plus timeout per \
                         acquire, which vkcuda does not model; the import itself works"
                    .to_owned(),
            })
        }
        SemaphoreHandleType::NvSciSync => Err(Error::Unsupported {
            what: format!("signal/wait on a {handle_type} semaphore"),
            reason: "NvSciSync signal/wait exchanges an NvSciSyncFence, which vkcuda does \
                     not model; the import itself works"
                .to_owned(),
        }),
        t if !t.is_timeline() && value != 0 => Err(Error::invalid(
            "value",
            format!("{value} for a binary {t} semaphore"),
            "0 (binary semaphores carry no value)",
        )),
        _ => Ok(()),
    }
}

/// Checks the length of a batch: at least one operation, and a count the driver takes.
fn check_batch_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid(
            "semaphores",
            "the batch is empty",
            "at least one (semaphore, value) pair",
        ));
    }
    if u32::try_from(len).is_err() {
        return Err(Error::invalid(
            "semaphores",
            format!("{len} operations in one batch"),
            format!("at most {}", u32::MAX),
        ));
    }
    Ok(())
}

fn signal_params(value: u64) -> sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS {
    use sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS_st__bindgen_ty_1 as Params;
    use sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS_st__bindgen_ty_1__bindgen_ty_1 as Fence;
    use sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS_st__bindgen_ty_1__bindgen_ty_2 as NvSci;
    use sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS_st__bindgen_ty_1__bindgen_ty_3 as Keyed;
    sys::CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS {
        params: Params {
            fence: Fence { value },
            nvSciSync: NvSci { reserved: 0 },
            keyedMutex: Keyed { key: 0 },
            reserved: [0; 12],
        },
        flags: 0,
        reserved: [0; 16],
    }
}

fn wait_params(value: u64) -> sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS {
    use sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS_st__bindgen_ty_1 as Params;
    use sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS_st__bindgen_ty_1__bindgen_ty_1 as Fence;
    use sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS_st__bindgen_ty_1__bindgen_ty_2 as NvSci;
    use sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS_st__bindgen_ty_1__bindgen_ty_3 as Keyed;
    sys::CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS {
        params: Params {
            fence: Fence { value },
            nvSciSync: NvSci { reserved: 0 },
            keyedMutex: Keyed {
                key: 0,
                timeoutMs: 0,
            },
            reserved: [0; 10],
        },
        flags: 0,
        reserved: [0; 16],
    }
}

/// An external semaphore imported into CUDA (`cuImportExternalSemaphore`): a Vulkan
/// binary or timeline semaphore, a D3D fence, ...
///
/// Signals and waits are enqueued on a stream and run in stream order.
///
/// # Destruction
/// The semaphore is destroyed only after every signal and wait enqueued through it has
/// finished: each operation records a CUDA event on its stream, and `Drop` waits for those
/// events (on the host) before `cuDestroyExternalSemaphore`. A wait on a value nobody
/// signals therefore blocks the drop as it blocks the stream: signal it, or do not enqueue
/// it.
pub struct ExternalSemaphore {
    raw: sys::CUexternalSemaphore,
    handle_type: SemaphoreHandleType,
    ctx: Arc<CudaContext>,
    /// Events recorded after operations on this semaphore. A completed one is re-recorded
    /// for the next operation, so the list stays as long as the operations in flight.
    in_flight: Mutex<Vec<CudaEvent>>,
    /// The highest timeline value enqueued for signalling (shared with the Vulkan
    /// semaphore when imported by [`crate::interop::SharedSemaphore`]).
    high_water: HighWater,
}

// SAFETY: `CUexternalSemaphore` is an opaque driver handle usable from any thread once its
// context is bound, which every use here does first; the event list is behind a mutex.
unsafe impl Send for ExternalSemaphore {}
// SAFETY: as above; shared access only reads the handle or locks the mutex.
unsafe impl Sync for ExternalSemaphore {}

impl Drop for ExternalSemaphore {
    fn drop(&mut self) {
        let events = self
            .in_flight
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for event in events.iter() {
            self.ctx.record_err(event.synchronize());
        }
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: every operation enqueued on the semaphore was followed by an event (or a
        // stream synchronisation) that has now completed; destroyed only here, once.
        self.ctx
            .record_err(unsafe { raw::destroy_external_semaphore(self.raw) });
    }
}

impl fmt::Debug for ExternalSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalSemaphore")
            .field("handle_type", &self.handle_type)
            .field("device", &self.ctx.ordinal())
            .finish()
    }
}

impl ExternalSemaphore {
    /// Imports a semaphore into `ctx`.
    ///
    /// An fd handle moves into CUDA when the import succeeds and is closed by vkcuda when
    /// it fails; Win32 and NvSci handles are only borrowed for the call. Only the fd types
    /// are tested (Linux); the others are passed as the CUDA documentation describes and
    /// are untested. Keyed mutexes and NvSciSync import, but [`ExternalSemaphore::signal`]
    /// and [`ExternalSemaphore::wait`] return [`Error::Unsupported`] for them.
    ///
    /// # Safety
    /// 1. `handle` is a synchronisation object of the type its variant states (e.g. a
    ///    timeline `VkSemaphore` for `TimelineFd`), exported by `ctx`'s device.
    /// 2. A Win32 or NvSci handle is valid for the duration of the call.
    ///
    /// # Errors
    /// [`Error::InvalidExternalHandle`] when the driver rejects the handle,
    /// [`Error::Unsupported`] for `CUDA_ERROR_NOT_SUPPORTED`, [`Error::Cuda`] otherwise.
    /// After any error the fd has been closed; nothing leaks.
    pub unsafe fn import(ctx: &Context, handle: SemaphoreHandle) -> Result<Self> {
        let handle_type = handle.handle_type();
        let cuda = ctx.cuda();
        bind(cuda)?;
        let raw = with_raw_semaphore_handle(handle, |raw_handle| {
            let desc = semaphore_handle_desc(handle_type, raw_handle);
            // SAFETY: the context is current (bound above); `desc` names the live handle
            // lent for this call; the caller guarantees its type and validity.
            unsafe { raw::import_external_semaphore(&desc) }
                .map_err(|e| import_error("cuImportExternalSemaphore", handle_type, e))
        })?;
        Ok(Self {
            raw,
            handle_type,
            ctx: cuda.clone(),
            in_flight: Mutex::default(),
            high_water: HighWater::new(0),
        })
    }

    /// The handle type it was imported from.
    pub fn handle_type(&self) -> SemaphoreHandleType {
        self.handle_type
    }

    /// Whether signal and wait take a value (timeline semaphores and fences).
    pub fn is_timeline(&self) -> bool {
        self.handle_type.is_timeline()
    }

    /// The CUDA context it was imported in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The raw handle, for driver calls vkcuda does not wrap. Do not destroy it.
    pub fn cu_external_semaphore(&self) -> sys::CUexternalSemaphore {
        self.raw
    }

    /// Makes this import check its timeline signals against `mark` (the Vulkan
    /// semaphore's), so values never go backwards across the two APIs.
    pub(crate) fn share_high_water(&mut self, mark: &HighWater) {
        self.high_water = mark.clone();
    }

    /// The highest timeline value enqueued for signalling through this import (or the
    /// Vulkan semaphore it shares its mark with): a signal that returned an error after
    /// being enqueued (at `cuEventRecord`) is counted.
    pub fn highest_signalled(&self) -> u64 {
        self.high_water.get()
    }

    /// Enqueues a signal on `stream`: a timeline is set to `value`, a binary semaphore
    /// (`value` must be 0) becomes signalled, once all earlier work on `stream` is done.
    ///
    /// # Errors
    /// As [`ExternalSemaphore::signal_many`].
    pub fn signal(&self, stream: &CudaStream, value: u64) -> Result<()> {
        Self::signal_many(stream, &[(self, value)])
    }

    /// Enqueues a wait on `stream`: later work on `stream` runs once a timeline reaches
    /// `value`, or a binary semaphore (`value` must be 0) is signalled (and reset).
    ///
    /// # Errors
    /// As [`ExternalSemaphore::wait_many`].
    pub fn wait(&self, stream: &CudaStream, value: u64) -> Result<()> {
        Self::wait_many(stream, &[(self, value)])
    }

    /// Signals every `(semaphore, value)` pair with one `cuSignalExternalSemaphoresAsync`.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] for an empty batch, a non-zero value for a binary
    ///   semaphore, a semaphore imported in another context than `stream`'s, a timeline
    ///   signalled twice in the batch, or (`ops`) a timeline value not above the highest
    ///   value already signalled or enqueued through vkcuda for it
    ///   ([`ExternalSemaphore::highest_signalled`]; checked and enqueued under one lock).
    /// * [`Error::Unsupported`] for keyed mutexes and NvSciSync.
    /// * [`Error::Cuda`] when a driver call fails. If the signal was enqueued but its event
    ///   could not be recorded, the stream is synchronised before the error returns, so
    ///   the destruction guarantee still holds, and the value counts as signalled: do not
    ///   signal it again.
    pub fn signal_many(stream: &CudaStream, ops: &[(&ExternalSemaphore, u64)]) -> Result<()> {
        Self::check_batch(stream, ops)?;
        let timelines: Vec<_> = ops
            .iter()
            .enumerate()
            .filter(|(_, (sem, _))| sem.is_timeline())
            .map(|(i, &(sem, value))| (i, &sem.high_water, value))
            .collect();
        let batch = HighWater::lock_batch("ops", &timelines)?;
        let sems: Vec<_> = ops.iter().map(|(sem, _)| sem.raw).collect();
        let params: Vec<_> = ops.iter().map(|&(_, value)| signal_params(value)).collect();
        // SAFETY: the context is current (bound by `check_batch`), every semaphore belongs
        // to it (checked), both arrays have one entry per pair and their length fits a
        // `c_uint` (checked); `track` keeps each semaphore alive until the signal has run.
        unsafe { raw::signal_external_semaphores_async(&sems, &params, stream.cu_stream()) }
            .map_err(|e| Error::cuda("cuSignalExternalSemaphoresAsync", e))?;
        batch.commit();
        Self::track(stream, ops)
    }

    /// Waits for every `(semaphore, value)` pair with one `cuWaitExternalSemaphoresAsync`.
    ///
    /// # Errors
    /// As [`ExternalSemaphore::signal_many`] (`cuWaitExternalSemaphoresAsync`).
    pub fn wait_many(stream: &CudaStream, ops: &[(&ExternalSemaphore, u64)]) -> Result<()> {
        Self::check_batch(stream, ops)?;
        let sems: Vec<_> = ops.iter().map(|(sem, _)| sem.raw).collect();
        let params: Vec<_> = ops.iter().map(|&(_, value)| wait_params(value)).collect();
        // SAFETY: as in `signal_many`.
        unsafe { raw::wait_external_semaphores_async(&sems, &params, stream.cu_stream()) }
            .map_err(|e| Error::cuda("cuWaitExternalSemaphoresAsync", e))?;
        Self::track(stream, ops)
    }

    /// Validates a batch and binds the stream's context.
    fn check_batch(stream: &CudaStream, ops: &[(&ExternalSemaphore, u64)]) -> Result<()> {
        check_batch_len(ops.len())?;
        let ctx = stream.context();
        for &(sem, value) in ops {
            check_value(sem.handle_type, value)?;
            if sem.ctx.as_ref() != ctx.as_ref() {
                return Err(Error::invalid(
                    "stream",
                    format!(
                        "a stream of CUDA device #{} for a semaphore imported on device #{}",
                        ctx.ordinal(),
                        sem.ctx.ordinal()
                    ),
                    "a stream of the context the semaphores were imported in",
                ));
            }
        }
        bind(ctx)
    }

    /// Records, for each semaphore of a batch just enqueued on `stream`, an event after
    /// it. If that fails, synchronises `stream` so no semaphore can be destroyed while the
    /// operation is pending.
    fn track(stream: &CudaStream, ops: &[(&ExternalSemaphore, u64)]) -> Result<()> {
        for &(sem, _) in ops {
            if let Err(e) = sem.record_after(stream) {
                sem.ctx.record_err(stream.synchronize());
                return Err(Error::cuda("cuEventRecord", e));
            }
        }
        Ok(())
    }

    /// Records the end of the work enqueued so far on `stream` in a completed event of
    /// this semaphore, or in a new one.
    fn record_after(&self, stream: &CudaStream) -> Result<(), DriverError> {
        let mut events = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for event in events.iter() {
            if event.try_is_complete()? {
                return event.record(stream);
            }
        }
        events.push(stream.record_event(None)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_semaphores_take_no_value() {
        assert!(check_value(SemaphoreHandleType::OpaqueFd, 0).is_ok());
        match check_value(SemaphoreHandleType::OpaqueFd, 3) {
            Err(Error::InvalidArgument { arg, problem, .. }) => {
                assert_eq!(arg, "value");
                assert!(problem.contains("binary OpaqueFd"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert!(check_value(SemaphoreHandleType::TimelineFd, 3).is_ok());
        assert!(check_value(SemaphoreHandleType::D3D12Fence, u64::MAX).is_ok());
    }

    #[test]
    fn keyed_mutex_and_nvscisync_signal_wait_are_unsupported() {
        for t in [
            SemaphoreHandleType::D3D11KeyedMutex,
            SemaphoreHandleType::D3D11KeyedMutexKmt,
            SemaphoreHandleType::NvSciSync,
        ] {
            assert!(
                matches!(check_value(t, 0), Err(Error::Unsupported { .. })),
                "{t}"
            );
        }
    }

    #[test]
    fn batches_are_never_empty() {
        assert!(matches!(
            check_batch_len(0),
            Err(Error::InvalidArgument {
                arg: "semaphores",
                ..
            })
        ));
        assert!(check_batch_len(3).is_ok());
    }

    #[test]
    fn params_carry_the_value() {
        assert_eq!(signal_params(7).params.fence.value, 7);
        assert_eq!(wait_params(9).params.fence.value, 9);
    }

    #[test]
    fn import_descriptor_carries_type_and_handle() {
        let desc = semaphore_handle_desc(
            SemaphoreHandleType::TimelineFd,
            RawSemaphoreHandle { fd: 42 },
        );
        assert_eq!(
            desc.type_,
            sys::CUexternalSemaphoreHandleType::CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD
        );
        // SAFETY: the descriptor was built with the `fd` member.
        assert_eq!(unsafe { desc.handle.fd }, 42);
    }
}
